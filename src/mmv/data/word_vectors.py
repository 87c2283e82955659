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

:class:`VectorFile` reads a whole file once, a block of vectors at a time, in bounded memory (what
``mmv vocab recover`` streams through, :mod:`mmv.data.vocab_recovery`).
"""
from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from mmv.data.tokenizer import PAD_ID, Vocabulary

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
_TEXT_BLOCK_BYTES = 1 << 24  # text read per block: ~5,000 lines of 300 values, parsed by numpy in one call


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
    if vocab.is_rows_table:
        raise ValueError("a table of rows names rows of an existing embedding; build a matrix from a vocabulary "
                         "with ids 0..N-1")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such word-vector file")
    binary = _is_binary_format(path)
    backend = _resolve_backend(backend)
    if backend == "gensim":
        rows, file_dim = _rows_with_gensim(path, vocab, binary)
    else:
        rows, file_dim = _rows_streaming(path, vocab)
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


def _rows_streaming(path: str | os.PathLike, vocab: Vocabulary) -> tuple[dict[int, np.ndarray], int]:
    collector = _RowCollector(vocab)
    with VectorFile(path) as vectors:
        for words, block in vectors.blocks():
            for word, vector in zip(words, block):
                word = decode_word(word)
                if collector.wants(word) is not None:
                    collector.add(word, vector.copy())  # a copy: a view would keep the whole block alive
        return collector.rows(), vectors.dim


def _has_text_header(path: str | os.PathLike) -> bool:
    with VectorFile(path) as vectors:
        return vectors.count is not None


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


# ----------------------------------------------------------------------------------------------------------------
# Whole files, a block of vectors at a time


class VectorFile:
    """A word2vec file (binary or text, optionally ``.gz``) read once from start to end, a block of vectors at a time.

    Memory is bounded by the block: a binary block is parsed with one ``bytes.find`` per word and its vectors are
    copied out in one piece; a text block is parsed by numpy's C reader (``np.loadtxt``), far slower per word than
    the binary format (text holds about 3 times the bytes, as decimals).

    >>> with VectorFile("GoogleNews-vectors-negative300.bin.gz") as vectors:
    ...     for words, block in vectors.blocks():   # list[bytes], float32 [n, vectors.dim]
    ...         ...

    Attributes:
        path: The file.
        binary: Binary (``.bin``) or text (``.txt``, ``.vec``) format.
        dim: Vector size, from the header (or the first line of a text file without one).
        count: Words the header announces; None for a text file without a header.
        size: Bytes of the file on disk (compressed, for ``.gz``), the unit of :attr:`position`.

    Raises:
        ValueError: On opening, an unknown format or a bad header; while reading, a truncated or malformed file (the
            message names the file, and the word or line).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such word-vector file")
        self.binary = _is_binary_format(path)
        self.size = os.path.getsize(self.path)
        self._raw = open(self.path, "rb")
        gzipped = self.path.lower().endswith(".gz")
        self._file: BinaryIO = gzip.GzipFile(fileobj=self._raw, mode="rb") if gzipped else self._raw  # type: ignore
        try:
            self._first_line = self._guarded(self._file.readline)
            parts = self._first_line.split()
            if len(parts) == 2 and all(part.isdigit() for part in parts):
                self.count, self.dim = int(parts[0]), int(parts[1])
                self._first_line = b""
            elif self.binary:
                raise ValueError(f"{self.path}: line 1: expected a 'count dim' header, got {self._first_line[:80]!r}")
            else:
                self.count, self.dim = None, len(parts) - 1
            if self.dim < 1:
                raise ValueError(f"{self.path}: line 1: not a word-vector line: {self._first_line[:80]!r}")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "VectorFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self._raw.close()

    @property
    def position(self) -> int:
        """Bytes of the file on disk read so far (for a progress bar)."""
        return self._raw.tell()

    def blocks(self, size: int = 16384) -> Iterator[tuple[list[bytes], np.ndarray]]:
        """Yields ``(words, vectors)``: up to ``size`` words (UTF-8 bytes, see :func:`decode_word`) and their
        vectors, float32 ``[n, dim]``, in file order."""
        reader = self._binary_blocks(size) if self.binary else self._text_blocks(size)
        yield from self._guarded_iter(reader)

    def _guarded(self, read):
        try:
            return read()
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise ValueError(f"{self.path}: truncated or corrupt compressed file ({err})") from None

    def _guarded_iter(self, iterator: Iterator) -> Iterator:
        while True:
            item = self._guarded(lambda: next(iterator, None))
            if item is None:
                return
            yield item

    def _binary_blocks(self, size: int) -> Iterator[tuple[list[bytes], np.ndarray]]:
        vector_bytes = 4 * self.dim
        buffer, pos, done = b"", 0, 0
        assert self.count is not None
        while done < self.count:
            words: list[bytes] = []
            pieces: list[bytes] = []
            starts: list[int] = []
            while len(words) < size and done < self.count:
                space = buffer.find(b" ", pos)
                if space == -1 or len(buffer) - space - 1 < vector_bytes:
                    # NOTE: the vectors of this block found so far are copied out before the buffer moves on.
                    pieces.append(b"".join([buffer[start:start + vector_bytes] for start in starts]))
                    starts = []
                    more = self._file.read(max(_CHUNK_BYTES, vector_bytes + 1024))
                    if not more:
                        raise ValueError(f"{self.path}: truncated: the header announces {self.count} words, the file "
                                         f"ends in word {done + 1}")
                    buffer, pos = buffer[pos:] + more, 0
                    continue
                words.append(buffer[pos:space])
                starts.append(space + 1)
                pos = space + 1 + vector_bytes
                done += 1
            pieces.append(b"".join([buffer[start:start + vector_bytes] for start in starts]))
            yield words, np.frombuffer(b"".join(pieces), dtype="<f4").reshape(len(words), self.dim)

    def _text_blocks(self, size: int) -> Iterator[tuple[list[bytes], np.ndarray]]:
        # NOTE: a text block is cut by bytes, not by ``size``: its lines take several times the memory of vectors.
        first = 2 if self.count is not None else 1  # the line number of the first data line
        pending = [self._first_line] if self._first_line else []
        done = entries = 0  # lines read, words read
        while True:
            lines = pending + self._file.readlines(_TEXT_BLOCK_BYTES)
            pending = []
            if not lines:
                break
            words, values = [], []
            for line in lines:
                parts = line.split(None, 1)
                if not parts:
                    continue  # a blank line (e.g. at the end)
                words.append(parts[0])
                values.append(parts[1] if len(parts) == 2 else b"\n")
            if not words:
                continue
            vectors = self._parse_text(values, first + done)
            done += len(lines)
            entries += len(words)
            yield words, vectors
        if self.count is not None and entries < self.count:
            raise ValueError(f"{self.path}: truncated: the header announces {self.count} words, the file has "
                             f"{entries}")

    def _parse_text(self, values: list[bytes], first_line: int) -> np.ndarray:
        try:
            vectors = np.loadtxt(io.BytesIO(b"".join(v if v.endswith(b"\n") else v + b"\n" for v in values)),
                                 dtype=np.float32, comments=None, ndmin=2)
            if vectors.shape == (len(values), self.dim):
                return vectors
        except ValueError:
            pass
        for offset, text in enumerate(values):  # the slow path names the first bad line
            fields = text.split()
            where = f"{self.path}: line {first_line + offset}"
            if len(fields) != self.dim:
                raise ValueError(f"{where}: {len(fields)} values, expected {self.dim} (a truncated or malformed file)")
            _parse_floats(fields, self.path, first_line + offset)
        raise ValueError(f"{self.path}: lines {first_line}-{first_line + len(values) - 1}: not a word-vector block")


def decode_word(word: bytes) -> str:
    """A word of :meth:`VectorFile.blocks` as text (binary files may keep the newline of the previous vector)."""
    return word.lstrip(b"\n").decode("utf-8", errors="replace")
