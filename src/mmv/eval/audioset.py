"""AudioSet: an MLP on frozen audio features, scored by mAP over the 527 classes (paper Table 2, "AS MLP").

Data (the official release; the clips are not distributed, so every copy is a local download, usually incomplete):

* ``class_labels_indices.csv``: ``index,mid,display_name`` (quoted names may hold commas);
* ``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``, ``eval_segments.csv``: three comment lines
  (``# Segments csv created ...``, ``# num_ytids=...``, ``# YTID, start_seconds, end_seconds, positive_labels``),
  then ``YTID, start, end, "mid1,mid2,..."``;
* the clips, anywhere under the data folder (or ``clip_root``), found by YouTube id and start time as
  :mod:`mmv.eval.youtube_clips` describes (``<YTID>_<start>.wav``/``.mp4``..., or ``<YTID>.*``).

Protocol (the paper gives only "MLP on frozen features" and mAP; every other setting is our choice, an option):

1. features: the pooled audio backbone output ``aud_repr`` (as the ESC-50 probe), averaged over ``windows`` evenly
   spaced windows of the model's audio window (released models: 3.2 s) over the 10-s segment; one row per clip;
2. training clips: ``train_sets`` (default both balanced and unbalanced lists, i.e. the full ~2M training set; the
   two lists are disjoint); evaluation clips: ``eval_segments.csv``;
3. classifier: standardised features, an MLP with ``hidden`` = (512,) ReLU units, 527 sigmoid outputs, binary
   cross-entropy, Adam (lr 1e-3, cosine decay, batch 256, 10 epochs) over features streamed from disk in chunks
   (:mod:`mmv.eval.streaming`: bounded memory for the 2M clips);
4. metric: mAP as AudioSet's benchmarks compute it, the mean over classes of sklearn's (non-interpolated) average
   precision, over the classes with at least one positive among the evaluated clips (the others are left out and
   listed); the chance level is the mean positive rate of those classes (the AP of random scores).

Coverage follows :mod:`mmv.eval.datasets`: a copy lacking listed clips is refused unless ``allow_partial``.
"""
from __future__ import annotations

import csv
import logging
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mmv.data.skips import SkipReport
from mmv.data.windows import MediaItem, Windowing
from mmv.eval.datasets import Coverage, coverage_cell, coverage_markdown, require_coverage

logger = logging.getLogger(__name__)

SEGMENT_FILES = {"balanced": "balanced_train_segments.csv", "unbalanced": "unbalanced_train_segments.csv",
                 "eval": "eval_segments.csv"}
CLASS_FILE = "class_labels_indices.csv"
TRAIN_SETS = {"balanced": ("balanced",), "unbalanced": ("unbalanced",), "both": ("balanced", "unbalanced")}


# ------------------------------------------------------------------------------------------------ the lists
def read_class_labels(path: str | Path) -> tuple[list[str], list[str]]:
    """``(mids, display names)`` ordered by ``index`` from ``class_labels_indices.csv``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: AudioSet class list not found (expected {CLASS_FILE} under --data)")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"index", "mid", "display_name"} <= set(rows[0]):
        raise ValueError(f"{path}: expected the columns index,mid,display_name")
    rows.sort(key=lambda row: int(row["index"]))
    if [int(row["index"]) for row in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: class indices must run 0..{len(rows) - 1}")
    return [row["mid"] for row in rows], [row["display_name"] for row in rows]


@dataclass(frozen=True)
class Segment:
    """One listed segment: YouTube id, start and end as written in the list, class indices."""

    ytid: str
    start: str
    end: str
    labels: tuple[int, ...]


def read_segments(path: str | Path, mid_index: dict[str, int]) -> list[Segment]:
    """The segments of one official list (comment lines skipped; quoted, comma-separated label ids).

    Raises:
        ValueError: A malformed line or a label id not in the class list (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: AudioSet segment list not found")
    segments = []
    with open(path, newline="", encoding="utf-8") as handle:
        # The label list is quoted after ", ": skipinitialspace lets the csv module see the quote.
        for number, row in enumerate(csv.reader(handle, skipinitialspace=True), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 4:
                raise ValueError(f"{path}: line {number}: expected 'YTID, start, end, \"labels\"', got {row}")
            ytid, start, end, mids = (value.strip() for value in row)
            try:
                float(start), float(end)
                labels = tuple(mid_index[mid] for mid in mids.split(",") if mid)
            except ValueError:
                raise ValueError(f"{path}: line {number}: start and end must be numbers, got {start!r}, {end!r}")
            except KeyError as err:
                raise ValueError(f"{path}: line {number}: label {err.args[0]!r} is not in {CLASS_FILE}") from None
            segments.append(Segment(ytid, start, end, labels))
    return segments


@dataclass
class LabeledClips:
    """Clips found on disk with their class indices (``labels`` holds one tuple per item)."""

    items: list[MediaItem] = field(default_factory=list)
    labels: list[tuple[int, ...]] = field(default_factory=list)

    def targets(self, rows: np.ndarray, num_classes: int) -> np.ndarray:
        """Multi-hot ``[len(rows), num_classes]`` uint8 targets of the items ``rows``."""
        out = np.zeros((len(rows), num_classes), dtype=np.uint8)
        for row, item in enumerate(np.asarray(rows).tolist()):
            out[row, list(self.labels[item])] = 1
        return out


@dataclass
class AudioSetData:
    """The class list, the training and evaluation clips found, what is missing (``coverage``, ``skipped``)."""

    mids: list[str]
    classes: list[str]
    train: LabeledClips
    eval: LabeledClips
    coverage: Coverage
    skipped: SkipReport


def audioset(root: str | Path, train_sets: Sequence[str] = ("balanced", "unbalanced"),
             clip_root: str | Path | None = None) -> AudioSetData:
    """Reads the official lists under ``root`` and finds their clips under ``clip_root`` (default ``root``).

    Raises:
        FileNotFoundError: A list is missing, or none of the listed clips is on disk (the message names the folder
            searched and the file names expected).
    """
    from mmv.eval.youtube_clips import ClipIndex

    root = Path(root)
    mids, classes = read_class_labels(root / CLASS_FILE)
    mid_index = {mid: i for i, mid in enumerate(mids)}
    index = ClipIndex(clip_root or root)
    lists = [SEGMENT_FILES[name] for name in (*train_sets, "eval")]
    coverage = Coverage("audioset", index.root, "{" + ",".join(lists) + "}")
    skipped, found = SkipReport(), {"train": LabeledClips(), "eval": LabeledClips()}
    for name in (*train_sets, "eval"):
        part = SEGMENT_FILES[name].removesuffix("_segments.csv")
        side = found["eval" if name == "eval" else "train"]
        for segment in read_segments(root / SEGMENT_FILES[name], mid_index):
            item = index.find(segment.ytid, segment.start, segment.end)
            names = tuple(classes[c] for c in segment.labels)
            # Appended directly: the index already knows what is on disk (2M stat calls would be slow).
            where = item.path if item is not None else index.expected(segment.ytid, segment.start)
            coverage.entries.append((str(where), part, names, item is not None))
            if item is None:
                skipped.add(f"listed in {SEGMENT_FILES[name]} but missing", where)
                continue
            side.items.append(item)
            side.labels.append(segment.labels)
    if not coverage.found:
        raise coverage.nothing_found()
    return AudioSetData(mids, classes, found["train"], found["eval"], coverage, skipped)


# ------------------------------------------------------------------------------------------------ the protocol
@dataclass
class AudioSetConfig:
    """Options of the AudioSet MLP protocol (see the module docstring for why each default).

    Attributes:
        spec: the audio window (an :class:`~mmv.preprocess.AudioPreprocess`); None: the model's.
        windows: evenly spaced windows per 10-s segment, averaged into one row.
        train_sets: ``balanced``, ``unbalanced`` or both (the full training set).
        hidden: hidden layer widths of the MLP; ``()`` is a linear classifier.
        epochs: passes over the training features.
        batch_size: rows per Adam step.
        lr: Adam's peak learning rate (cosine decay).
        C: inverse L2 strength (sklearn's convention); None: no penalty.
        dropout: dropout before each layer of the MLP.
        space: ``repr`` (backbone, default) or ``va``/``vt``.
        extract_batch_size: spectrograms per forward pass.
        num_workers: decoding processes.
        chunk_items: clips per feature chunk on disk (bounds memory).
        seed: classifier initialisation and order.
        device: where the MLP trains.
    """

    spec: Any = None
    windows: int = 5
    train_sets: tuple[str, ...] = ("balanced", "unbalanced")
    hidden: tuple[int, ...] = (512,)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    C: float | None = None
    dropout: float = 0.0
    space: str = "repr"
    extract_batch_size: int = 16
    num_workers: int = 0
    chunk_items: int = 4096
    seed: int = 0
    device: str = "cpu"


def evaluate_audioset(
    model: torch.nn.Module,
    data_dir: str | Path,
    *,
    cfg: AudioSetConfig | None = None,
    clip_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    allow_partial: bool = False,
    return_scores: bool = False,
) -> dict[str, Any]:
    """Trains the MLP on the training clips' frozen features and reports mAP on ``eval_segments.csv``.

    ``return_scores`` adds the evaluation scores, targets and clips (``eval_scores``, ``eval_targets``,
    ``eval_paths``: arrays, not for the JSON report) so that a caller can check the metric independently.

    Raises:
        PartialDatasetError: Listed clips are missing and ``allow_partial`` is False.
    """
    from mmv.eval.features import preprocess_of
    from mmv.eval.io import FeatureCache, model_checksum
    from mmv.eval.metrics import mean_average_precision
    from mmv.eval.streaming import StreamingConfig, fit_streaming, predict_streaming

    cfg = cfg or AudioSetConfig()
    data = audioset(data_dir, cfg.train_sets, clip_root)
    require_coverage(data.coverage, allow_partial)
    for side, clips in (("training", data.train), ("evaluation", data.eval)):
        if not clips.items:
            raise ValueError(f"audioset: no {side} clip on disk ({data.coverage.by_part()})")
    spec = cfg.spec or preprocess_of(model).audio
    num_classes = len(data.classes)
    with ExitStack() as stack:
        root = Path(cache_dir) if cache_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        cache = FeatureCache(root, model_checksum(model))
        stores = {side: _audio_store(model, clips.items, spec, cfg, cache, side, progress)
                  for side, clips in (("train", data.train), ("eval", data.eval))}
        train_rows = stores["train"].rows(lambda rows: data.train.targets(rows, num_classes))
        classifier = fit_streaming(train_rows, num_classes, StreamingConfig(
            hidden=tuple(cfg.hidden), multilabel=True, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            C=cfg.C, dropout=cfg.dropout, seed=cfg.seed, device=cfg.device))
        eval_rows = stores["eval"].rows(lambda rows: data.eval.targets(rows, num_classes))
        scores, targets, eval_items = predict_streaming(classifier, eval_rows, cfg.device)
        num_train = len(stores["train"].items())
    mean_ap, per_class = mean_average_precision(scores, targets)
    present = ~np.isnan(per_class)
    skipped = SkipReport()
    for report in (data.skipped, stores["train"].skipped, stores["eval"].skipped):
        skipped.merge(report)
    result = {
        "task": "AudioSet MLP", "dataset": "audioset", "data": str(data_dir), "num_classes": num_classes,
        "mAP": 100.0 * mean_ap, "chance": {"mAP": 100.0 * float(targets[:, present].mean(axis=0).mean())},
        "classes_evaluated": int(present.sum()),
        "classes_left_out": [data.classes[c] for c in np.flatnonzero(~present)],
        "per_class_AP": {data.classes[c]: 100.0 * float(per_class[c]) for c in np.flatnonzero(present)},
        "num_train": int(num_train), "num_eval": int(len(scores)), "train_sets": list(cfg.train_sets),
        "skipped": skipped.as_dict(), "coverage": data.coverage.as_dict(), "partial": not data.coverage.complete,
        "options": {**asdict(cfg), "spec": asdict(spec)},
    }
    if return_scores:
        result.update(eval_scores=scores, eval_targets=targets,
                      eval_paths=[str(data.eval.items[i].path) for i in eval_items.tolist()])
    return result


def _audio_store(model, items, spec, cfg, cache, side, progress):
    """The pooled audio features of ``items`` on disk (computed once per model and options)."""
    from mmv.eval.features import embed_audio, files_key
    from mmv.eval.streaming import extract_store
    from mmv.eval.youtube_clips import resolve_segment

    options = {"space": cfg.space, "spec": asdict(spec), "windows": cfg.windows, "files": files_key(items),
               "chunk_items": cfg.chunk_items}
    directory = cache.path(f"audioset-{side}", options).with_suffix("")

    def embed(chunk: list[MediaItem], index: int):
        return embed_audio(model, [resolve_segment(item) for item in chunk], space=cfg.space, spec=spec,
                           windowing=Windowing("even", cfg.windows), batch_size=cfg.extract_batch_size,
                           num_workers=cfg.num_workers, progress=progress, desc=f"audioset {side} chunk {index + 1}")

    return extract_store(directory, items, embed, chunk_items=cfg.chunk_items, progress=progress,
                         desc=f"audioset {side} features")


def audioset_table(result: dict[str, Any]) -> str:
    """Markdown: mAP beside chance, clip counts, classes evaluated, coverage (and a PARTIAL mark)."""
    from mmv.eval.io import markdown_table

    coverage, partial = result["coverage"], result["partial"]
    parts = coverage["parts"]
    train_cov = {"found": sum(v["found"] for k, v in parts.items() if k != "eval"),
                 "listed": sum(v["listed"] for k, v in parts.items() if k != "eval")}
    rows = [["mAP %", result["mAP"], result["chance"]["mAP"], f"{result['classes_evaluated']}/{result['num_classes']}",
             result["num_train"], result["num_eval"], result["skipped"]["total"],
             coverage_cell(train_cov, partial), coverage_cell(parts.get("eval", {"found": 0, "listed": 0}), partial)]]
    title = "PARTIAL copy" if partial else f"{result['num_classes']} classes"
    head = (f"### {result['task']}: audioset ({title}; trained on {'+'.join(result['train_sets'])}, MLP "
            f"{result['options']['hidden'] or 'linear'})\n\n")
    table = markdown_table(["metric", "value", "chance", "classes evaluated", "train clips", "eval clips", "skipped",
                            "train coverage", "eval coverage"], rows)
    note = ""
    if result["classes_left_out"]:
        names = result["classes_left_out"]
        note = (f"\n\nLeft out of the mean (no positive among the evaluated clips): {', '.join(names[:10])}"
                f"{', ...' if len(names) > 10 else ''}.")
    return head + table + note + "\n\n" + coverage_markdown(coverage)
