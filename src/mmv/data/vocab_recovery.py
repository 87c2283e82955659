"""Recover the word→row table of a frozen word2vec embedding from the word2vec file it was copied from.

The released MMV checkpoints hold their text branch's word embedding (65,536 × 300), frozen during training and
initialised from Google News word2vec (paper fact sheet §1.5), but not the table saying which word each row is.
Each row is therefore a copy of one word's vector in that file, and the table can be found again by streaming the
file once (:func:`recover_vocabulary`, ``mmv vocab recover``):

* **exact copies**: each row's float32 bytes are hashed (a 64-bit multiply-add hash over the raw words, computed for
  a block of vectors at a time); every vector of the file is hashed the same way and looked up; a hit is confirmed
  by comparing the bytes;
* **copies up to scale**: rows that differ from a word's vector by a positive factor (a normalised embedding) or by
  rounding (a text-format file) are found by their cosine (>= 0.9999 by default). Candidates come from sign-of-random-
  projection hashes (4 tables of 32 projections): a positive scale changes no sign, so every copy up to scale or
  rounding is a candidate; a vector merely within the cosine of a row is a candidate with probability above 99.9%.
  Each candidate pair is confirmed by computing its cosine;
* **all-zero rows** are padding: ``<pad>`` names the first of them (the model's input pads with it).

Which word wins a row several words fit (*ambiguous* rows): an exact copy beats a copy up to scale, a higher cosine
beats a lower one, and between equals the word earlier in the file wins (word2vec files are sorted by frequency, and
a 2^16-word vocabulary most likely held the more frequent word). When k identical rows share a vector that m words
share, the first min(k, m) words in file order take the rows in row order; any of these pairings gives the model the
same input, since the rows are equal. The other words are left out of the table; a word takes at most one row.

Memory: the model's matrix, a normalised copy and the hashes (about 2.2 times the matrix: 170 MB for 65,536 × 300)
plus one block of the file (16,384 vectors, 20 MB); time: see ``benchmarks/bench_vocab_recovery.py``.

>>> result = recover_vocabulary(embedding_matrix("mmv_s3d"), "GoogleNews-vectors-negative300.bin.gz")
>>> result.counts()
{'rows': 65536, 'exact': ..., 'scaled': ..., 'padding': ..., 'ambiguous': ..., 'not_found': ...}
>>> result.vocabulary().save("mmv_s3d_vocab.json")
"""
from __future__ import annotations

import heapq
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmv.data.tokenizer import PAD_TOKEN, UNK_TOKEN, Vocabulary
from mmv.data.word_vectors import VectorFile, decode_word

__all__ = ["DEFAULT_MIN_COSINE", "RecoveryResult", "embedding_matrix", "recover_vocabulary"]

log = logging.getLogger(__name__)

DEFAULT_MIN_COSINE = 0.9999
_LSH_TABLES, _LSH_BITS = 4, 32
_SEED = 20201208  # the MMV release date: any fixed seed makes runs repeatable
_KEPT_CANDIDATES = 4  # scaled candidates kept per row: enough to settle a word wanted by several rows
_EXAMPLES = 10
_ROWS_AT_ONCE = 8192  # rows hashed or normalised together: bounds the temporaries


@dataclass
class RecoveryResult:
    """What :func:`recover_vocabulary` found.

    Attributes:
        table: ``{word: row}`` for every row found, plus ``"<pad>"``: the padding row (the first all-zero row, or
            0 when no row is all zero), in row order.
        rows: Rows of the embedding.
        kind: ``{row: "exact" | "scaled"}`` for every row in ``table`` (padding excluded).
        padding: All-zero rows.
        ambiguous: Rows that several words fit (one was chosen, see the module docstring).
        words_left_out: Words that fitted a row another word won.
        duplicate_rows: Rows equal to another row for which no further word was left (counted as not found).
        words_read: Words in the file.
        seconds: Time of the pass.
        examples: A few rows of each kind, for the report: ``{"ambiguous": [{"row", "chosen", "others"}], ...}``.
    """

    table: dict[str, int]
    rows: int
    kind: dict[int, str]
    padding: int
    ambiguous: int
    words_left_out: int
    duplicate_rows: int
    words_read: int
    seconds: float = 0.0
    examples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def exact(self) -> int:
        return sum(kind == "exact" for kind in self.kind.values())

    @property
    def scaled(self) -> int:
        return sum(kind == "scaled" for kind in self.kind.values())

    @property
    def not_found(self) -> int:
        return self.rows - self.exact - self.scaled - self.padding

    def counts(self) -> dict[str, int]:
        """Rows by outcome: ``exact + scaled + padding + not_found == rows``; ``ambiguous`` rows are among the
        found ones."""
        return {"rows": self.rows, "exact": self.exact, "scaled": self.scaled, "padding": self.padding,
                "ambiguous": self.ambiguous, "not_found": self.not_found}

    def vocabulary(self) -> Vocabulary:
        """The table as a :class:`~mmv.data.tokenizer.Vocabulary` (a table of rows)."""
        return Vocabulary.from_rows(self.table)


def embedding_matrix(model: str | os.PathLike) -> np.ndarray:
    """The word-embedding matrix ``[rows, dim]`` of a model: a saved mmv model (folder or ``.safetensors``), the
    name of a released model (downloaded and converted on first use), or a released ``.pkl`` file.

    Raises:
        ValueError: The model has no word embedding.
    """
    path = Path(model)
    if path.suffix == ".pkl":
        from mmv.convert.haiku import TEXT_SCOPE
        from mmv.convert.pickle_io import load_released_checkpoint

        embed = load_released_checkpoint(path)["params"].get(f"{TEXT_SCOPE}/embed", {}).get("embeddings")
        if embed is None:
            raise ValueError(f"{path}: no word embedding ({TEXT_SCOPE}/embed/embeddings)")
        return np.asarray(embed, dtype=np.float32)
    from safetensors import safe_open

    from mmv.checkpoint import model_path, read_description

    _, weights = read_description(model_path(model))
    with safe_open(str(weights), framework="np") as f:
        key = "text_backbone.embed.weight"
        if key not in f.keys():
            raise ValueError(f"{model}: the model has no word embedding (no {key})")
        return f.get_tensor(key).astype(np.float32, copy=False)


def recover_vocabulary(matrix: np.ndarray, word2vec: str | os.PathLike, *, min_cosine: float = DEFAULT_MIN_COSINE,
                       block_size: int = 16384, progress: bool = True) -> RecoveryResult:
    """Finds, for each row of ``matrix``, the word of ``word2vec`` whose vector it is (see the module docstring).

    Args:
        matrix: The frozen word embedding, ``[rows, dim]``.
        word2vec: A word2vec file: binary (``.bin``) or text (``.txt``, ``.vec``), optionally ``.gz``.
        min_cosine: The least cosine of a copy up to scale.
        block_size: Vectors per block of the file (memory: ``block_size × dim × 4`` bytes, times a few).
        progress: Show a progress bar (bytes of the file).

    Raises:
        ValueError: The file's vectors have another size than the rows, or the file is truncated or malformed.
    """
    began = time.perf_counter()
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or not matrix.size:
        raise ValueError(f"expected a [rows, dim] embedding matrix, got shape {matrix.shape}")
    with VectorFile(word2vec) as vectors:
        if vectors.dim != matrix.shape[1]:
            raise ValueError(f"{vectors.path}: vectors have {vectors.dim} dimensions, the model's word embedding "
                             f"{matrix.shape[1]}: not the word2vec file of this model")
        index = _RowIndex(matrix, min_cosine)
        words_read = _stream(vectors, index, block_size, progress)
    result = index.resolve(words_read)
    result.seconds = time.perf_counter() - began
    log.info("recovered %d of %d rows from %s in %.1f s: %s", len(result.kind), result.rows, word2vec,
             result.seconds, result.counts())
    return result


def _stream(vectors: VectorFile, index: "_RowIndex", block_size: int, progress: bool) -> int:
    from tqdm import tqdm

    bar = tqdm(total=vectors.size, unit="B", unit_scale=True, desc="reading word vectors", disable=not progress)
    words_read, shown = 0, 0
    with bar:
        for words, block in vectors.blocks(block_size):
            index.add_block(words, block, words_read)
            words_read += len(words)
            bar.update(vectors.position - shown)
            shown = vectors.position
    return words_read


def _row_hash(vectors: np.ndarray) -> np.ndarray:
    """64-bit hashes of the raw bytes of each row of a float32 ``[n, dim]`` array: sum of the row's 64-bit (or, for
    an odd ``dim``, 32-bit) words times fixed random odd multipliers, modulo 2^64."""
    n, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors)
    words = vectors.view(np.uint64) if dim % 2 == 0 else vectors.view(np.uint32)
    multipliers = np.random.default_rng(_SEED).integers(0, 2**63, size=words.shape[1], dtype=np.uint64) * 2 + 1
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, _ROWS_AT_ONCE):  # in pieces: the products take twice the rows' memory
        piece = words[start:start + _ROWS_AT_ONCE].astype(np.uint64, copy=False)
        out[start:start + _ROWS_AT_ONCE] = (piece * multipliers).sum(axis=1, dtype=np.uint64)
    return out


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.tobytes() == b.tobytes()


class _RowIndex:
    """The rows to find, indexed by their byte hash and their sign-of-projection keys, and what the pass found."""

    def __init__(self, matrix: np.ndarray, min_cosine: float) -> None:
        self.matrix = matrix
        self.min_cosine = min_cosine
        rows, dim = matrix.shape
        self.zero = ~matrix.any(axis=1)
        live = np.flatnonzero(~self.zero & np.isfinite(matrix).all(axis=1))
        # Exact: rows grouped by identical bytes (a group per row, bar copies); groups looked up by hash.
        live_rows = matrix[live]
        hashes = _row_hash(live_rows) if live.size else np.zeros(0, np.uint64)
        self.row_hash = np.zeros(rows, dtype=np.uint64)
        self.row_hash[live] = hashes
        order = np.argsort(hashes, kind="stable")
        sorted_hashes, sorted_rows = hashes[order], live[order]
        starts = np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]]) if live.size else order
        self.sorted_hashes = sorted_hashes[starts]  # unique
        self.group_rows: list[list[int]] = [[row] for row in sorted_rows[starts].tolist()]
        self.first_group = np.arange(len(starts))  # unique hash -> its (first) group
        self.more_groups: dict[int, list[int]] = {}  # unique hash -> all its groups, where rows share the hash
        ends = np.r_[starts[1:], len(sorted_rows)].astype(np.int64)
        for u in np.flatnonzero(ends - starts > 1).tolist():  # rare: copies, or a hash collision
            for row in sorted_rows[starts[u] + 1:ends[u]].tolist():
                groups = self.more_groups.setdefault(u, [u])
                same = [g for g in groups if _same_bytes(matrix[self.group_rows[g][0]], matrix[row])]
                if same:
                    self.group_rows[same[0]].append(row)
                else:
                    groups.append(len(self.group_rows))
                    self.group_rows.append([row])
        group_of = np.full(rows, -1)
        for group, members in enumerate(self.group_rows):
            group_of[members] = group
        self.group_of: list[int] = group_of.tolist()
        self.group_words: list[list[tuple[int, bytes]]] = [[] for _ in self.group_rows]
        self.group_count = np.zeros(len(self.group_rows), dtype=np.int64)
        # Up to scale: unit rows and their projection keys, one sorted table per key.
        self.unit = np.zeros_like(matrix)
        for start in range(0, live.size, _ROWS_AT_ONCE):
            rows_now = live[start:start + _ROWS_AT_ONCE]
            piece = matrix[rows_now].astype(np.float64)
            self.unit[rows_now] = piece / np.linalg.norm(piece, axis=1, keepdims=True)
        self.projection = np.random.default_rng(_SEED).standard_normal((dim, _LSH_TABLES * _LSH_BITS))
        self.projection = self.projection.astype(np.float32)
        keys = self._keys(live_rows)
        del live_rows
        key_order = [np.argsort(keys[:, t], kind="stable") for t in range(_LSH_TABLES)]
        self.sorted_keys = [keys[order, t] for t, order in enumerate(key_order)]
        self.key_rows = [live[order] for order in key_order]
        self.candidates: dict[int, list[tuple[float, int, bytes]]] = {}  # row -> heap of (cosine, -index, word)
        self.best_cosine: dict[tuple[str, int], float] = {}  # (word, row) -> cosine, of the pairs up to scale

    def _keys(self, vectors: np.ndarray) -> np.ndarray:
        """``[n, tables]`` uint32: the signs of ``_LSH_BITS`` random projections per table."""
        bits = np.packbits(vectors @ self.projection > 0, axis=1, bitorder="little")
        return bits.view(np.uint32)

    def add_block(self, words: list[bytes], block: np.ndarray, first: int) -> None:
        if not self.group_rows:
            return
        hashes = _row_hash(block)
        position = np.searchsorted(self.sorted_hashes, hashes).clip(max=len(self.sorted_hashes) - 1)
        exact = np.zeros(len(block), dtype=bool)
        for i in np.flatnonzero(self.sorted_hashes[position] == hashes).tolist():
            u = int(position[i])
            for group in self.more_groups.get(u, (u,)):
                if _same_bytes(self.matrix[self.group_rows[group][0]], block[i]):
                    self.group_count[group] += 1
                    if len(self.group_words[group]) < len(self.group_rows[group]) + 8:
                        self.group_words[group].append((first + i, words[i]))
                    exact[i] = True
                    break
        # NOTE: an exact copy of one row is not also a candidate up to scale for another: a word takes one row.
        self._add_scaled(words, block, first, np.flatnonzero(~exact))

    def _add_scaled(self, words: list[bytes], block: np.ndarray, first: int, todo: np.ndarray) -> None:
        keys = self._keys(block[todo])
        found_i, found_rows = [], []
        for t in range(_LSH_TABLES):
            table = self.sorted_keys[t]
            start = np.searchsorted(table, keys[:, t], side="left")
            counts = np.searchsorted(table, keys[:, t], side="right") - start
            if not counts.any():
                continue
            # Every (vector, row) of equal keys: the ranges start[i]..start[i] + counts[i] of the sorted table.
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            found_i.append(np.repeat(todo, counts))
            found_rows.append(self.key_rows[t][np.repeat(start, counts) + offsets])
        if not found_i:
            return
        rows = self.matrix.shape[0]
        pairs = np.unique(np.concatenate(found_i) * rows + np.concatenate(found_rows))
        index, row_of = pairs // rows, pairs % rows
        vectors = block[index].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            cosines = np.einsum("ij,ij->i", vectors, self.unit[row_of].astype(np.float64))
            cosines /= np.linalg.norm(vectors, axis=1)
        keep = cosines >= self.min_cosine  # False for NaN too (a zero vector in the file)
        for i, row, cosine in zip(index[keep].tolist(), row_of[keep].tolist(), cosines[keep].tolist()):
            heap = self.candidates.setdefault(row, [])
            entry = (cosine, -(first + i), words[i])
            if len(heap) < _KEPT_CANDIDATES:
                heapq.heappush(heap, entry)
            else:
                heapq.heappushpop(heap, entry)

    def resolve(self, words_read: int) -> RecoveryResult:
        table: dict[str, int] = {}
        kind: dict[int, str] = {}
        # Per group of identical rows, the words that fitted, best first (what an ambiguous row chose among).
        fitted: dict[int, list[str]] = {}
        unseen = 0  # words that fitted a row beyond those kept in memory (all of them left out)

        def usable(word: str) -> bool:  # a word the vocabulary accepts and no row has taken yet
            return word.split() == [word] and word not in (PAD_TOKEN, UNK_TOKEN) and word not in table

        found = [g for g, words in enumerate(self.group_words) if words]
        for group in sorted(found, key=lambda g: self.group_words[g][0][0]):  # by first word in the file
            entries, members = self.group_words[group], self.group_rows[group]
            if len(entries) == 1 and len(members) == 1:  # the usual case: one row, one word
                fitted[group] = words = [decode_word(entries[0][1])]
            else:
                fitted[group] = words = list(dict.fromkeys(decode_word(word) for _, word in entries))
                unseen += int(self.group_count[group]) - len(entries)
            for row, word in zip(sorted(members), [w for w in words if usable(w)]):
                table[word] = row
                kind[row] = "exact"
        self._resolve_scaled(table, kind, fitted, usable)
        ambiguous = sorted(row for row in kind
                           if len(fitted[self.group_of[row]]) > len(self.group_rows[self.group_of[row]]))
        examples: dict[str, list[Any]] = {"ambiguous": [], "scaled": []}
        chosen_of_group: dict[int, list[str]] = {}
        for word, row in table.items():
            chosen_of_group.setdefault(self.group_of[row], []).append(word)
        for row in ambiguous[:_EXAMPLES]:
            group = self.group_of[row]
            chosen = chosen_of_group[group]
            examples["ambiguous"].append({"row": row, "chosen": [w for w in fitted[group] if w in chosen],
                                          "others": [w for w in fitted[group] if w not in chosen][:5]})
        examples["scaled"] = [{"row": row, "word": word, "cosine": round(self.best_cosine[(word, row)], 7)}
                              for word, row in table.items() if kind[row] == "scaled"][:_EXAMPLES]
        matched = {word for words in fitted.values() for word in words}
        duplicates = sum(row not in kind for group in fitted for row in self.group_rows[group])
        zero_rows = np.flatnonzero(self.zero)
        pad_row = int(zero_rows[0]) if zero_rows.size else 0
        ordered = dict(sorted(table.items(), key=lambda item: item[1]))
        return RecoveryResult(table={PAD_TOKEN: pad_row, **ordered}, rows=self.matrix.shape[0],
                              kind=dict(sorted(kind.items())), padding=int(zero_rows.size), ambiguous=len(ambiguous),
                              words_left_out=len(matched - table.keys()) + unseen, duplicate_rows=duplicates,
                              words_read=words_read, examples=examples)

    def _resolve_scaled(self, table: dict[str, int], kind: dict[int, str], fitted: dict[int, list[str]],
                        usable: Any) -> None:
        """Rows without an exact copy take their best candidate still free: highest cosine, then earliest word."""
        pairs = []
        for row, heap in self.candidates.items():
            if row in kind:
                continue
            pairs.extend((-cosine, -negative_index, row, decode_word(word)) for cosine, negative_index, word in heap)
        for negative_cosine, _, row, word in sorted(pairs):
            self.best_cosine.setdefault((word, row), -negative_cosine)
            words = fitted.setdefault(self.group_of[row], [])
            if word not in words:
                words.append(word)
            if row in kind or not usable(word):
                continue
            table[word] = row
            kind[row] = "scaled"
