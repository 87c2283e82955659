"""Pretrained word vectors (word2vec binary or text format) aligned with a :class:`~mmv.data.tokenizer.Vocabulary`.

MMV's text network starts with a frozen embedding initialised from the 300-d Google News word2vec vectors (paper
fact sheet §1.5). :func:`load_word_vectors` gives the ``[len(vocab), dim]`` matrix for that embedding: row ``i`` is
the vector of vocabulary word ``i``.

Formats, chosen by extension (a trailing ``.gz`` is decompressed on the fly):

* ``.bin``: word2vec binary (a ``"count dim"`` header line, then each word, a space and ``dim`` little-endian
  float32), e.g. ``GoogleNews-vectors-negative300.bin.gz``.
* ``.txt`` / ``.vec``: text, one ``word v1 ... vdim`` line per word, with the ``"count dim"`` header line
  (word2vec, fastText) or without it (GloVe).

Matching: a vocabulary word takes the vector of the same word in the file; failing that, of the first word in the
file that is equal ignoring case (word2vec files are sorted by frequency, and Google News is case-sensitive while our
tokenizer lower-cases). When a word appears twice in the file the first vector is used (as gensim does).

Two readers give the same matrix: gensim's ``KeyedVectors`` (used when installed; it holds the whole file in memory,
3.6 GB for Google News) and a streaming reader that keeps only the vocabulary's rows (``backend="stream"``).
"""
from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from mmv.data.tokenizer import PAD_ID, Vocabulary

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20


@dataclass
class WordVectors:
    """Word vectors aligned with a vocabulary.

    Attributes:
        matrix: ``[len(vocab), dim]`` float32; row 0 (padding) is zeros.
        num_found: Vocabulary words (special tokens excluded) that have a vector in the file.
        num_words: Vocabulary words, special tokens excluded.
        missing: The vocabulary words without a vector, in id order.
    """

    matrix: np.ndarray
    num_found: int
    num_words: int
    missing: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Fraction of the vocabulary words found in the file."""
        return self.num_found / self.num_words if self.num_words else 1.0


def load_word_vectors(path: str | os.PathLike, vocab: Vocabulary, dim: int | None = None, *,
                      missing: str = "zeros", seed: int = 0, backend: str = "auto") -> np.ndarray:
    """The embedding matrix for ``vocab`` from a word2vec file; logs the coverage.

    Args:
        path: Word vectors in word2vec binary (``.bin``) or text (``.txt``, ``.vec``) format, optionally ``.gz``.
        vocab: The vocabulary whose rows to fill.
        dim: Expected vector size; checked against the file when given.
        missing: Rows of words not in the file: ``"zeros"``, or ``"random"`` (normal with the standard deviation of
            the vectors found, seeded by ``seed``). The padding row is always zeros.
        seed: Seed for ``missing="random"``.
        backend: ``"gensim"``, ``"stream"`` (our reader, memory bounded by the vocabulary) or ``"auto"`` (gensim
            when installed).

    Returns:
        ``[len(vocab), dim]`` float32.
    """
    return read_word_vectors(path, vocab, dim, missing=missing, seed=seed, backend=backend).matrix


def read_word_vectors(path: str | os.PathLike, vocab: Vocabulary, dim: int | None = None, *,
                      missing: str = "zeros", seed: int = 0, backend: str = "auto") -> WordVectors:
    """Like :func:`load_word_vectors`, also returning the coverage and the missing words."""
    if missing not in ("zeros", "random"):
        raise ValueError(f"missing must be 'zeros' or 'random', got {missing!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such word-vector file")
    binary = _is_binary_format(path)
    backend = _resolve_backend(backend)
    if backend == "gensim":
        rows, file_dim = _rows_with_gensim(path, vocab, binary)
    else:
        rows, file_dim = _rows_streaming(path, vocab, binary)
    if dim is not None and dim != file_dim:
        raise ValueError(f"{os.fspath(path)}: vectors have {file_dim} dimensions, expected {dim}")
    result = _assemble(rows, vocab, file_dim, missing, seed)
    logger.info("word vectors: %d of %d vocabulary words found in %s (%.1f%%)", result.num_found, result.num_words,
                os.fspath(path), 100 * result.coverage)
    return result


def _is_binary_format(path: str | os.PathLike) -> bool:
    name = Path(path).name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    suffix = Path(name).suffix
    if suffix == ".bin":
        return True
    if suffix in (".txt", ".vec"):
        return False
    raise ValueError(f"{os.fspath(path)}: unknown word-vector format {suffix!r} (expected .bin, .txt or .vec)")


def _resolve_backend(backend: str) -> str:
    if backend not in ("auto", "gensim", "stream"):
        raise ValueError(f"backend must be 'auto', 'gensim' or 'stream', got {backend!r}")
    if backend == "stream":
        return backend
    try:
        import gensim  # noqa: F401
    except ImportError:
        if backend == "gensim":
            raise RuntimeError("backend='gensim' needs gensim: pip install 'mmv[word2vec]'") from None
        return "stream"
    return "gensim"


class _RowCollector:
    """Keeps, for each vocabulary word, the vector of its exact match or else of its first case-insensitive match."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.exact: dict[int, np.ndarray] = {}
        self.folded: dict[int, np.ndarray] = {}

    def wants(self, word: str) -> int | None:
        """The vocabulary id this file word would fill, or None (checked before decoding a vector).

        The special tokens never match: padding stays zeros and ``<unk>`` is treated like any missing word.
        """
        index = self.vocab.id(word) if word in self.vocab else None
        if index is not None and index >= 2 and index not in self.exact:
            return index
        lower = word.lower()
        if lower != word and lower in self.vocab:
            index = self.vocab.id(lower)
            if index >= 2 and index not in self.exact and index not in self.folded:
                return index
        return None

    def add(self, word: str, vector: np.ndarray) -> None:
        index = self.wants(word)
        if index is None:
            return
        (self.exact if word in self.vocab else self.folded)[index] = vector

    def rows(self) -> dict[int, np.ndarray]:
        return {**self.folded, **self.exact}


def _rows_with_gensim(path: str | os.PathLike, vocab: Vocabulary, binary: bool) -> tuple[dict[int, np.ndarray], int]:
    from gensim.models import KeyedVectors

    no_header = not binary and not _has_text_header(path)
    try:
        vectors = KeyedVectors.load_word2vec_format(os.fspath(path), binary=binary, no_header=no_header,
                                                    unicode_errors="replace")
    except (ValueError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"{os.fspath(path)}: not a valid word2vec {'binary' if binary else 'text'} file: {err}") \
            from err
    collector = _RowCollector(vocab)
    for word in vectors.index_to_key:  # file order, duplicates already dropped (first kept)
        # NOTE: gensim sizes its table from the header, so each duplicate leaves a None slot at the end.
        if word is not None and collector.wants(word) is not None:
            collector.add(word, np.asarray(vectors[word], dtype=np.float32))
    return collector.rows(), vectors.vector_size


def _rows_streaming(path: str | os.PathLike, vocab: Vocabulary, binary: bool) -> tuple[dict[int, np.ndarray], int]:
    collector = _RowCollector(vocab)
    with _open_binary(path) as f:
        entries = _binary_entries(f, path) if binary else _text_entries(f, path)
        dim = next(entries)  # the first item is the vector size
        for word, decode in entries:
            if collector.wants(word) is not None:
                collector.add(word, decode())
    return collector.rows(), dim


def _open_binary(path: str | os.PathLike) -> BinaryIO:
    return gzip.open(path, "rb") if os.fspath(path).lower().endswith(".gz") else open(path, "rb")


def _has_text_header(path: str | os.PathLike) -> bool:
    with _open_binary(path) as f:
        parts = f.readline().split()
    return len(parts) == 2 and all(part.isdigit() for part in parts)


def _parse_header(line: bytes, path: str | os.PathLike) -> tuple[int, int]:
    parts = line.split()
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"{os.fspath(path)}: line 1: expected a 'count dim' header, got {line[:80]!r}")
    return int(parts[0]), int(parts[1])


def _binary_entries(f: BinaryIO, path: str | os.PathLike) -> Iterator:
    """Yields the vector size, then (word, decode) pairs; ``decode()`` returns the float32 vector."""
    count, dim = _parse_header(f.readline(), path)
    yield dim
    vector_bytes = 4 * dim
    buffer, pos = b"", 0
    for entry in range(count):
        space = buffer.find(b" ", pos)
        while space == -1 or len(buffer) - space - 1 < vector_bytes:
            more = f.read(max(_CHUNK_BYTES, vector_bytes))
            if not more:
                raise ValueError(f"{os.fspath(path)}: truncated: the header announces {count} words, "
                                 f"the file ends in word {entry + 1}")
            buffer, pos = buffer[pos:] + more, 0
            space = buffer.find(b" ", pos)
        # NOTE: words are separated by a newline after each vector in most writers but not all; strip it like gensim.
        word = buffer[pos:space].decode("utf-8", errors="replace").lstrip("\n")
        start = space + 1
        pos = start + vector_bytes
        yield word, (lambda b=buffer, s=start: np.frombuffer(b, dtype="<f4", count=dim, offset=s).astype(np.float32))


def _text_entries(f: BinaryIO, path: str | os.PathLike) -> Iterator:
    """Yields the vector size, then (word, decode) pairs; the vector size comes from the header or the first line."""
    first = f.readline()
    parts = first.split()
    lines: Iterator[tuple[int, bytes]]
    if len(parts) == 2 and all(part.isdigit() for part in parts):
        dim = int(parts[1])
        lines = enumerate(f, start=2)
    else:
        dim = len(first.rstrip().split(b" ")) - 1
        lines = _chain_first(first, f)
    if dim < 1:
        raise ValueError(f"{os.fspath(path)}: line 1: not a word-vector line: {first[:80]!r}")
    yield dim
    for number, line in lines:
        fields = line.rstrip().split(b" ")
        if len(fields) == 1 and not fields[0]:
            continue  # a blank line (e.g. at the end)
        if len(fields) != dim + 1:
            raise ValueError(f"{os.fspath(path)}: line {number}: {len(fields) - 1} values, expected {dim}")
        word = fields[0].decode("utf-8", errors="replace")
        yield word, (lambda v=fields[1:], n=number: _parse_floats(v, path, n))


def _chain_first(first: bytes, f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    yield 1, first
    yield from enumerate(f, start=2)


def _parse_floats(values: list[bytes], path: str | os.PathLike, line_number: int) -> np.ndarray:
    try:
        return np.array([float(v) for v in values], dtype=np.float32)
    except ValueError:
        raise ValueError(f"{os.fspath(path)}: line {line_number}: a value is not a number") from None


def _assemble(rows: dict[int, np.ndarray], vocab: Vocabulary, dim: int, missing: str, seed: int) -> WordVectors:
    matrix = np.zeros((len(vocab), dim), dtype=np.float32)
    for index, vector in rows.items():
        matrix[index] = vector
    missing_ids = [index for index in range(2, len(vocab)) if index not in rows]
    if missing == "random":
        # NOTE: unknown words get vectors of the same scale as the known ones (std of all found entries), so they do
        # not vanish nor dominate after the text network's ReLU + max-pool.
        scale = float(np.std(np.stack(list(rows.values())))) if rows else 0.1
        rng = np.random.default_rng(seed)
        random_ids = [index for index in range(len(vocab)) if index != PAD_ID and index not in rows]
        matrix[random_ids] = rng.normal(0.0, scale, size=(len(random_ids), dim)).astype(np.float32)
    return WordVectors(matrix=matrix, num_found=len(rows), num_words=len(vocab) - 2,
                       missing=[vocab.word(index) for index in missing_ids])
