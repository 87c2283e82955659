"""Kinetics-600 linear probe (paper Table 2, "K600 Lin"): a linear classifier on frozen video features of ~390k
training clips, in bounded memory; top-1 and top-5 on the validation set.

Data (the official release lists YouTube segments; every copy is a local download, usually incomplete):

* ``train.csv`` and ``validate.csv`` (or ``val.csv``) under the data folder or its ``annotations/``, with the
  columns ``label,youtube_id,time_start,time_end,split``; classes are the training labels in sorted order;
* the clips anywhere under the data folder (or ``clip_root``): ``<split>/<label>/<id>_<start:06d>_<end:06d>.mp4``
  as the official crawler writes them, the same names flat in one folder, or ``<id>.*`` (a whole video, cut at the
  listed times); see :mod:`mmv.eval.youtube_clips`. Labels come from the CSVs, never from folder names.

Protocol (the paper gives only "linear" and top-1; the rest is our choice, each an option):

1. features: the frozen backbone output ``vid_repr`` (as the UCF101 probe, the model's own clips);
2. training: ``train_passes`` (default 1) passes over the training clips, each one random window per clip with
   random crop and horizontal flip (one row per clip per pass: 390k rows of 1024-4096 floats, 1.6-6.4 GB);
3. test: ``test_windows`` (default 10) evenly spaced windows per validation clip, centre crop, averaged;
4. classifier: standardised features, softmax regression with sklearn's L2 convention (``|W|^2 / (2 C N)``),
   trained by Adam on mini-batches streamed from memory-mapped chunks of ``chunk_items`` clips (10 epochs, batch
   1024, lr 1e-3 with cosine decay) or by full-batch L-BFGS summed over the chunks (``solver="lbfgs"``); C is
   chosen on a held-out tenth of the training clips (every pass of a clip on the same side) unless given;
5. top-1 and top-5 on ``validate.csv`` (Kinetics' test labels were not public when the paper was written).

Features are written to ``<cache>/kinetics600-*-<hash>/chunk-NNNNN.npy`` (:mod:`mmv.eval.streaming`); an
interrupted extraction resumes at the first missing chunk, and a rerun with another C or solver only refits.
"""
from __future__ import annotations

import csv
import logging
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv.data.skips import SkipReport
from mmv.data.windows import MediaItem, Windowing
from mmv.eval.datasets import Coverage, require_coverage

logger = logging.getLogger(__name__)

KINETICS_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
_EVAL_NAMES = ("validate.csv", "val.csv")


def find_kinetics_csv(root: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` under ``root`` or ``root/annotations``."""
    for folder in (root, root / "annotations"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"{root}: no {' or '.join(names)} (the official Kinetics-600 list, with the columns "
                            "label,youtube_id,time_start,time_end,split), here or under annotations/")


def read_kinetics_csv(path: Path) -> list[dict[str, str]]:
    """The rows of an official list (``label``, ``youtube_id``, ``time_start``, ``time_end``)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    needed = {"label", "youtube_id", "time_start", "time_end"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError(f"{path}: expected the columns {','.join(sorted(needed))}, got "
                         f"{','.join(rows[0]) if rows else 'nothing'}")
    return rows


@dataclass
class KineticsData:
    """Classes, the clips found per side (items and labels), and what is missing."""

    classes: list[str]
    train: list[MediaItem]
    train_labels: np.ndarray
    test: list[MediaItem]
    test_labels: np.ndarray
    coverage: Coverage
    skipped: SkipReport


def kinetics600(root: str | Path, clip_root: str | Path | None = None) -> KineticsData:
    """Reads ``train.csv`` and ``validate.csv`` and finds their clips under ``clip_root`` (default ``root``).

    Raises:
        FileNotFoundError: A list is missing, or none of the listed clips is on disk.
        ValueError: A validation label that is not a training label.
    """
    from mmv.eval.youtube_clips import ClipIndex

    root = Path(root)
    lists = {"train": find_kinetics_csv(root, ("train.csv",)), "validate": find_kinetics_csv(root, _EVAL_NAMES)}
    rows = {side: read_kinetics_csv(path) for side, path in lists.items()}
    classes = sorted({row["label"] for row in rows["train"]})
    label_index = {name: i for i, name in enumerate(classes)}
    index = ClipIndex(clip_root or root)
    coverage = Coverage("kinetics600", index.root, "{" + ",".join(p.name for p in lists.values()) + "}")
    skipped = SkipReport()
    found: dict[str, tuple[list[MediaItem], list[int]]] = {"train": ([], []), "validate": ([], [])}
    for side, side_rows in rows.items():
        for number, row in enumerate(side_rows, 2):
            if row["label"] not in label_index:
                raise ValueError(f"{lists[side]}: line {number}: label {row['label']!r} is not a training label")
            item = index.find(row["youtube_id"], row["time_start"], row["time_end"])
            where = item.path if item is not None else index.expected(row["youtube_id"], row["time_start"])
            coverage.entries.append((str(where), side, (row["label"],), item is not None))
            if item is None:
                skipped.add(f"listed in {lists[side].name} but missing", where)
                continue
            found[side][0].append(item)
            found[side][1].append(label_index[row["label"]])
    if not coverage.found:
        raise coverage.nothing_found()
    (train, train_labels), (test, test_labels) = found["train"], found["validate"]
    return KineticsData(classes, train, np.asarray(train_labels, dtype=np.int64), test,
                        np.asarray(test_labels, dtype=np.int64), coverage, skipped)


@dataclass
class KineticsConfig:
    """Options of the Kinetics-600 linear probe (see the module docstring for why each default).

    Attributes:
        spec: the video window (a :class:`~mmv.preprocess.VideoPreprocess`); None: the model's.
        flip: random horizontal flips in the training passes.
        train_passes: augmented passes over the training clips (one row per clip each).
        test_windows: evenly spaced windows per validation clip, averaged.
        solver: ``adam`` (mini-batches) or ``lbfgs`` (full batch), both streaming from disk.
        epochs: Adam's passes over the training rows.
        batch_size: rows per Adam step.
        lr: Adam's peak learning rate.
        C: inverse L2 strength; None: chosen from ``KINETICS_C_GRID`` on a held-out tenth of the training clips.
        space: ``repr`` (backbone, default) or ``va``/``vt``.
        extract_batch_size: clips per forward pass.
        num_workers: decoding processes.
        chunk_items: clips per feature chunk on disk (bounds memory).
        seed: windows, crops, classifier initialisation and order, the held-out draw.
        device: where the classifier trains.
    """

    spec: Any = None
    flip: bool = True
    train_passes: int = 1
    test_windows: int = 10
    solver: str = "adam"
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    C: float | None = None
    space: str = "repr"
    extract_batch_size: int = 8
    num_workers: int = 0
    chunk_items: int = 4096
    seed: int = 0
    device: str = "cpu"


def evaluate_kinetics600(
    model: torch.nn.Module,
    data_dir: str | Path,
    *,
    cfg: KineticsConfig | None = None,
    clip_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    allow_partial: bool = False,
    return_scores: bool = False,
) -> dict[str, Any]:
    """Extracts features to disk, trains the streaming linear classifier, reports top-1/top-5 on validation.

    The result has the shape of the other probes' (one "split", ``validate``), so :func:`~mmv.eval.linear_probe.
    probe_table` prints it. ``return_scores`` adds ``test_scores``, ``test_labels`` and ``test_paths`` (arrays, not
    for the JSON report) so that a caller can check the metric independently.

    Raises:
        PartialDatasetError: Listed clips are missing and ``allow_partial`` is False.
    """
    from mmv.eval.features import preprocess_of
    from mmv.eval.io import FeatureCache, model_checksum
    from mmv.eval.linear_probe import summarise_splits
    from mmv.eval.metrics import topk_accuracy
    from mmv.eval.streaming import (ChunkedRows, StreamingConfig, fit_streaming, held_out_items,
                                    predict_streaming, select_c_streaming)

    cfg = cfg or KineticsConfig()
    data = kinetics600(data_dir, clip_root)
    require_coverage(data.coverage, allow_partial)
    if not data.train or not data.test:
        raise ValueError(f"kinetics600: no training or no validation clip on disk ({data.coverage.by_part()})")
    spec = cfg.spec or preprocess_of(model).video
    num_classes = len(data.classes)
    solver = StreamingConfig(solver=cfg.solver, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, C=cfg.C,
                             seed=cfg.seed, device=cfg.device)
    skipped = SkipReport()
    skipped.merge(data.skipped)
    with ExitStack() as stack:
        root = Path(cache_dir) if cache_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        cache = FeatureCache(root, model_checksum(model))
        passes = [_video_store(model, data.train, spec, cfg, cache, f"train-pass{p}", cfg.seed * 100003 + p,
                               augment=True, progress=progress) for p in range(cfg.train_passes)]
        test_store = _video_store(model, data.test, spec, cfg, cache, "validate", cfg.seed, augment=False,
                                  progress=progress)
        for store in (passes[0], test_store):  # a clip that fails in one pass fails in all: count it once
            skipped.merge(store.skipped)
        rows = ChunkedRows([loader for store in passes
                            for loader in store.rows(lambda items: data.train_labels[items]).loaders])
        selection = None
        if solver.C is None:
            held_out = held_out_items(len(data.train), 0.1, cfg.seed)
            solver.C, selection = select_c_streaming(rows, num_classes, solver, held_out, KINETICS_C_GRID)
        classifier = fit_streaming(rows, num_classes, solver)
        scores, labels, test_items = predict_streaming(
            classifier, test_store.rows(lambda items: data.test_labels[items]), cfg.device)
        num_rows = sum(len(store.items()) for store in passes)
    result = topk_accuracy(scores, labels, ks=(1, 5))
    result.update({"C": solver.C, "num_train_rows": int(num_rows), "num_test": int(len(scores)),
                   "num_classes_present": int(len(np.unique(data.train_labels))), "skipped": skipped.as_dict(),
                   "coverage": data.coverage.by_part().get("validate")})
    if selection is not None:
        result["C_selection"] = {f"{c:g}": accuracy for c, accuracy in selection.items()}
    options = {**asdict(cfg), "spec": asdict(spec), "C": solver.C}
    summary = summarise_splits("video linear probe (streaming)", "kinetics600", Path(data_dir), {"validate": result},
                               num_classes, options, data.coverage)
    if return_scores:
        summary.update(test_scores=scores, test_labels=labels,
                       test_paths=[str(data.test[i].path) for i in test_items.tolist()])
    return summary


def _video_store(model, items, spec, cfg, cache, name, seed, *, augment, progress):
    """Pooled video features of ``items`` on disk: one random augmented window per clip, or ``test_windows``."""
    from mmv.eval.features import embed_videos, files_key
    from mmv.eval.streaming import extract_store
    from mmv.eval.youtube_clips import resolve_segment

    windowing = Windowing("random") if augment else Windowing("even", cfg.test_windows)
    options = {"space": cfg.space, "spec": asdict(spec), "flip": cfg.flip, "augment": augment, "seed": seed,
               "windows": None if augment else cfg.test_windows, "files": files_key(items),
               "chunk_items": cfg.chunk_items}
    directory = cache.path(f"kinetics600-{name}", options).with_suffix("")

    def embed(chunk: list[MediaItem], index: int):
        # Each chunk draws its windows and crops from (seed, chunk), each clip from its place in the chunk.
        chunk_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        return embed_videos(model, [resolve_segment(item) for item in chunk], space=cfg.space, spec=spec,
                            windowing=windowing, augment=augment, flip=cfg.flip, seed=chunk_seed,
                            batch_size=cfg.extract_batch_size, num_workers=cfg.num_workers, progress=progress,
                            desc=f"kinetics600 {name} chunk {index + 1}")

    return extract_store(directory, items, embed, chunk_items=cfg.chunk_items, progress=progress,
                         desc=f"kinetics600 {name} features")
