"""Nearest segments by cosine similarity: exact search, or an approximate FAISS index for large libraries.

Vectors are L2-normalised, so cosine similarity is the inner product. Up to :data:`EXACT_LIMIT` vectors the search
is exact (one matrix product over the float32 matrix); beyond it an approximate index from FAISS (``mmv[search]``)
is built once per library generation and cached beside the library (``index-<side>-<space>.faiss``). The limit and
the index settings were chosen by ``benchmarks/bench_index.py`` (docs/search.md): on two CPU cores exact search takes
87 ms at a million 256-d vectors, fast enough for a person waiting, while building the IVF index there takes minutes;
above the limit the index answers in milliseconds with a recall@10 of about 0.95.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXACT_LIMIT", "VectorIndex", "build_approximate", "exact_top_k"]

log = logging.getLogger(__name__)

EXACT_LIMIT = 1_000_000
# IVF: about sqrt(N) lists of a coarse k-means, searching the nearest NPROBE of them (docs/search.md).
NPROBE = 32


def exact_top_k(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and scores of the ``k`` rows of ``vectors`` with the highest inner product with ``query``."""
    scores = vectors @ query.astype(np.float32)
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = np.lexsort((top, -scores[top]))  # best first; ties by row, so results are reproducible
    return top[order], scores[top[order]]


def build_approximate(vectors: np.ndarray) -> Any:
    """A FAISS IVF index (inner product) over ``vectors`` (needs faiss: ``pip install 'mmv[search]'``)."""
    from mmv.extras import require

    faiss = require("faiss", "search", "approximate search over a large library")
    count, dim = vectors.shape
    lists = max(1, min(int(4 * np.sqrt(count)), count // 39))  # FAISS wants >= 39 training points per list
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(count, size=min(count, 256 * lists), replace=False)]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    index.nprobe = min(NPROBE, lists)
    return index


class VectorIndex:
    """The vectors of one side and space of a library, searchable.

    Attributes:
        ids: Segment id of each row.
        generation: The library generation the index was built at.
        kind: ``exact`` or ``ivf``.
    """

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, generation: int, approximate: Any = None) -> None:
        self.ids, self.vectors, self.generation, self.approximate = ids, vectors, generation, approximate
        self.kind = "ivf" if approximate is not None else "exact"

    @property
    def size(self) -> int:
        return len(self.ids)

    @classmethod
    def for_library(cls, library: Any, side: str, space: str) -> "VectorIndex":
        """The index of ``library``'s vectors; an approximate one (cached on disk) above :data:`EXACT_LIMIT`."""
        generation = library.generation()
        ids, vectors = library.vectors(side, space)
        if len(ids) <= EXACT_LIMIT:
            return cls(ids, vectors, generation)
        try:
            approximate = _cached_approximate(Path(library.root), side, space, generation, vectors)
        except ImportError as err:  # faiss missing: exact search still answers, only slower
            log.warning("%s; searching %d vectors exactly", err, len(ids))
            return cls(ids, vectors, generation)
        return cls(ids, vectors, generation, approximate)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Segment ids and scores of the ``k`` best rows, best first."""
        if self.approximate is None:
            rows, scores = exact_top_k(self.vectors, query, k)
        else:
            scores, rows = self.approximate.search(np.ascontiguousarray(query[None], dtype=np.float32), k)
            keep = rows[0] >= 0  # FAISS pads with -1 when fewer than k are found
            rows, scores = rows[0][keep], scores[0][keep]
        return self.ids[rows], scores


def _cached_approximate(root: Path, side: str, space: str, generation: int, vectors: np.ndarray) -> Any:
    """The approximate index from ``root`` when it was built at ``generation``, else built now and saved."""
    from mmv.atomic import atomic_path, atomic_write_json
    from mmv.extras import require

    faiss = require("faiss", "search", "approximate search over a large library")
    path, stamp = root / f"index-{side}-{space}.faiss", root / f"index-{side}-{space}.json"
    try:
        if path.exists() and json.loads(stamp.read_text()).get("generation") == generation:
            index = faiss.read_index(str(path))
            index.nprobe = min(NPROBE, index.nlist)
            return index
    except (OSError, ValueError, RuntimeError) as err:  # a damaged cache is rebuilt
        log.warning("rebuilding %s (%s)", path, err)
    log.info("building the approximate index of %d vectors (%s, %s)", len(vectors), side, space)
    index = build_approximate(vectors)
    with atomic_path(path, suffix=".faiss") as tmp:
        faiss.write_index(index, tmp)
    atomic_write_json(stamp, {"generation": generation, "vectors": len(vectors), "kind": "ivf"})
    return index
