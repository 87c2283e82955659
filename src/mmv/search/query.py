"""``mmv search``: a sentence, a sound, an image or a video against the segments of a library.

The query is embedded by the library's own model (``mmv.embed_*``, with the preprocessing stored in the model)
in the space where the query and the chosen side of the segments meet:

| query | ``--target video`` | ``--target audio`` |
|---|---|---|
| sentence | S_vat (text ↔ video) | S_vat (text ↔ audio: FAC and Shared; FAC never paired them in training) |
| sound | S_va (audio ↔ video) | S_va (audio ↔ audio) |
| image, video | S_va (vision ↔ vision; S_vat for a model without audio) | S_va (vision ↔ audio) |

A pair the model's graph does not offer is refused with a sentence that says why. Scores are cosine similarities.
The best segments are grouped into moments: segments of one file that touch or overlap become one moment (its
score is the best of its segments), and the ``top_k`` best moments are returned, best first.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv.search.library import Library, LibraryError
from mmv.search.vector_index import VectorIndex

__all__ = ["Moment", "Query", "Searcher", "resolve_space"]

log = logging.getLogger(__name__)

QUERY_KINDS = ("text", "audio", "image", "video")
TARGETS = ("video", "audio")


@dataclass(frozen=True)
class Query:
    """What to look for: ``text`` (a sentence) or a file (``audio``, ``image``, ``video``), optionally a time range
    of the file (``start``/``end`` seconds: a sound within a longer recording or a video's soundtrack)."""

    kind: str
    text: str | None = None
    path: str | None = None
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in QUERY_KINDS:
            raise ValueError(f"query kind must be one of {QUERY_KINDS}, got {self.kind!r}")
        if (self.kind == "text") != (self.text is not None):
            raise ValueError("a text query has text and no file; a file query has a file and no text")
        if self.kind != "text" and not self.path:
            raise ValueError(f"a {self.kind} query needs a file")


@dataclass(frozen=True)
class Moment:
    """A result: ``[start, end)`` seconds of a file, its score, and the segments it merges."""

    path: str
    start: float
    end: float
    score: float
    file_id: int
    segment_ids: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        """The moment as ``mmv search --json`` prints it, ``/api/search`` answers it and the page reads it."""
        return {"path": self.path, "start": round(self.start, 3), "end": round(self.end, 3),
                "score": round(float(self.score), 5), "file_id": self.file_id, "segment_id": self.segment_ids[0],
                "segment_ids": list(self.segment_ids), "name": os.path.basename(self.path)}


def resolve_space(kind: str, target: str, spaces: dict[str, list[str]], graph: str) -> str:
    """The space where a ``kind`` query meets the ``target`` side, or a ValueError saying why there is none."""
    if target not in TARGETS:
        raise ValueError(f"--target must be video or audio, got {target!r}")
    stored = spaces.get(target, [])
    if kind == "text":
        wanted = "vt"
        if target == "audio" and "vt" not in stored:
            why = ("its Disjoint graph gives audio and text no shared space that MMV's losses train" if graph ==
                   "disjoint" else "it has no audio branch or no text branch")
            raise ValueError(f"text -> audio is not available with this library's model: {why}; search "
                             "--target video, or use a FAC or Shared model")
    elif kind == "audio":
        wanted = "va"
    else:  # image, video: the fine space when the model has one
        wanted = "va" if "va" in stored else "vt"
    if wanted not in stored:
        raise ValueError(f"{kind} -> {target} is not available with this library's model (its {target} side is "
                         f"stored in {', '.join(stored) or 'no space'}; the model's modalities lack what this pair "
                         "needs)")
    return wanted


class Searcher:
    """A library and its model, ready for queries (``mmv search`` runs one; ``mmv serve`` keeps one)."""

    def __init__(self, library_dir: str | Path, model: torch.nn.Module | None = None, device: str = "cpu") -> None:
        from mmv.eval.io import model_checksum

        self.library = Library.open(library_dir)
        description = self.library.description
        if model is None:
            model = _load_model(description["model"]["source"], device)
        if model_checksum(model) != description["model"]["checksum"]:
            raise LibraryError(f"{library_dir}: indexed with another model (checksum {description['model']['checksum']}"
                               f", this one {model_checksum(model)}); search it with the model it was made with "
                               f"({description['model']['source']})")
        self.model = model.eval()
        self._indexes: dict[tuple[str, str], VectorIndex] = {}
        self._deflated: torch.nn.Module | None = None

    def close(self) -> None:
        self.library.close()

    # ------------------------------------------------------------------------------------------------------
    def embed(self, query: Query, space: str) -> np.ndarray:
        """The query's L2-normalised embedding ``[D]`` in ``space``."""
        import mmv
        from mmv.data.windows import MediaItem

        model = self.model
        if query.kind == "text":
            vector = mmv.embed_text(model, [query.text], space=space)
        else:
            item = MediaItem(Path(query.path), query.start, query.end)
            if query.kind == "audio":
                vector = mmv.embed_audio(model, [item], space=space)
            elif query.kind == "image":
                if self._deflated is None:  # one deflated copy of the visual backbone for every image query
                    from mmv.embed import deflated_view

                    self._deflated = deflated_view(model)
                vector = mmv.embed_image(self._deflated, [query.path], space=space)
            else:
                vector = mmv.embed_video(model, [item], space=space)
        return torch.nn.functional.normalize(vector.float(), dim=-1)[0].numpy()

    def index_for(self, side: str, space: str) -> VectorIndex:
        key = (side, space)
        generation = self.library.generation()
        index = self._indexes.get(key)
        if index is None or index.generation != generation:
            index = VectorIndex.for_library(self.library, side, space)
            self._indexes[key] = index
        return index

    def search(self, query: Query, target: str = "video", top_k: int = 10) -> list[Moment]:
        """The ``top_k`` best moments for ``query`` on the ``target`` side of the segments."""
        if top_k < 1:
            raise ValueError(f"--top-k must be >= 1, got {top_k}")
        description = self.library.description
        space = resolve_space(query.kind, target, description.get("spaces", {}), description["model"]["graph"])
        index = self.index_for(target, space)
        if index.size == 0:
            return []
        vector = self.embed(query, space)
        # Moments merge neighbouring segments: look at more segments than moments asked for.
        ids, scores = index.search(vector, min(index.size, max(4 * top_k, top_k + 20)))
        # Consecutive segments are a stride apart; with a stride longer than a segment they leave a gap between them.
        gap = max(0.0, float(description["stride"]) - float(description["segment_seconds"]))
        return merge_moments(self.library, ids, scores, top_k, gap)


def merge_moments(library: Library, ids: np.ndarray, scores: np.ndarray, top_k: int,
                  gap: float = 0.0) -> list[Moment]:
    """Groups the best segments into moments and keeps the ``top_k`` best.

    Segments of one file merge when they touch, overlap or are at most ``gap`` seconds apart (consecutive segments
    of a library indexed with a stride longer than its segments).
    """
    segments = library.segments(ids.tolist())
    by_file: dict[int, list[tuple[float, float, float, int]]] = {}
    for segment_id, score in zip(ids.tolist(), scores.tolist()):
        segment = segments.get(segment_id)
        if segment is not None:
            by_file.setdefault(segment.file_id, []).append((segment.start, segment.end, score, segment_id))
    moments = []
    tolerance = gap + 1e-6
    for file_id, parts in by_file.items():
        parts.sort()
        path = segments[parts[0][3]].path
        current = list(parts[0][:3]) + [[parts[0][3]]]
        for start, end, score, segment_id in parts[1:]:
            if start <= current[1] + tolerance:  # touches or overlaps the moment so far
                current[1], current[2] = max(current[1], end), max(current[2], score)
                current[3].append(segment_id)
            else:
                moments.append(Moment(path, current[0], current[1], current[2], file_id, tuple(current[3])))
                current = [start, end, score, [segment_id]]
        moments.append(Moment(path, current[0], current[1], current[2], file_id, tuple(current[3])))
    moments.sort(key=lambda m: (-m.score, m.path, m.start))
    return moments[:top_k]


def _load_model(source: str, device: str) -> torch.nn.Module:
    import mmv

    try:
        return mmv.load(source, map_location=device)
    except FileNotFoundError as err:
        raise LibraryError(f"the library's model is not at {source} any more ({err}); give it with --model") from None
