"""Video linear probe: the paper's protocol on UCF101, HMDB51 or any folder-per-class video dataset.

Protocol (fact sheet §5.2; the released ``eval_ucf101.py`` and DMVR's ``linear_mmv_hmdb.py``):

1. Frozen backbone features ``vid_repr`` (model in eval mode, BN moving statistics).
2. Training features: ``train_passes`` passes (default 10) over the training videos, each pass one random
   ``num_frames`` window per video with random crop and horizontal flip; every pass adds one row per video.
3. Test features: ``test_windows`` (default 10) evenly spaced windows per video, centre crop, averaged (equivalent
   to averaging the classifier scores, see :mod:`mmv.eval.classifiers`).
4. ``StandardScaler`` + ``LinearSVC`` with the published C: UCF101 1e-3; HMDB51 3e-4 (S3D-G), 1e-4 (TSM-50),
   3e-4 (TSM-50x2). Other datasets: C chosen on a held-out fifth of the training videos.
5. Top-1 and top-5 per split, and their mean over the splits.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mmv.eval.classifiers import LinearProbe, published_c, select_c
from mmv.eval.datasets import (
    ClassificationSplit,
    Coverage,
    coverage_cells,
    coverage_markdown,
    detect_video_layout,
    folder_split,
    hmdb51_splits,
    require_coverage,
    ucf101_splits,
)
from mmv.data.windows import MediaItem, Windowing
from mmv.eval.features import PooledFeatures, cached_pooled, embed_videos, files_key, preprocess_of
from mmv.data.skips import SkipReport
from mmv.eval.io import FeatureCache, markdown_table, model_checksum
from mmv.eval.metrics import mean_and_std, topk_accuracy

logger = logging.getLogger(__name__)


@dataclass
class VideoProbeConfig:
    """Options of the video linear probe (defaults: the paper's UCF101 protocol).

    Attributes:
        spec: frames, fps, resize and crop of a window (a :class:`~mmv.preprocess.VideoPreprocess`); None: the
            model's own (``model.preprocess.video``).
        flip: random horizontal flips in the augmented training passes.
        train_passes: augmented passes over the training videos.
        test_windows: evenly spaced windows per test video.
        C: SVM C; None picks the published value (UCF101/HMDB51) or selects one on held-out training videos.
        classifier: ``svm`` (the paper's), ``logreg`` or ``torch``.
        space: which output is probed (``repr`` in the paper; ``va``/``vt`` probe the embedding spaces).
        batch_size: clips per forward pass.
        num_workers: decoding processes.
        seed: seed of random windows and crops.
    """

    spec: Any = None
    flip: bool = True
    train_passes: int = 10
    test_windows: int = 10
    C: float | None = None
    classifier: str = "svm"
    space: str = "repr"
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 0


def split_features(
    model: torch.nn.Module,
    split: ClassificationSplit,
    cfg: VideoProbeConfig,
    cache: FeatureCache | None,
    progress: bool = True,
    tag: str = "video",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, SkipReport]:
    """Training features (passes stacked) and window-averaged test features of one split, cached.

    Returns:
        ``(train_x [P*N', D], train_y, test_x [M', D], test_y, skipped)``; files that fail to decode are left out.
    """
    spec = cfg.spec or preprocess_of(model).video
    base = {"space": cfg.space, "spec": asdict(spec), "flip": cfg.flip}
    train_items = [MediaItem(f.path) for f in split.train]
    test_items = [MediaItem(f.path) for f in split.test]
    train_labels = np.array([f.label for f in split.train], dtype=np.int64)
    test_labels = np.array([f.label for f in split.test], dtype=np.int64)
    skipped = SkipReport()
    xs, ys = [], []
    train_key = files_key(train_items)
    for p in range(cfg.train_passes):
        seed = cfg.seed * 100003 + p  # one seed per pass: each pass draws new windows and crops
        pooled = cached_pooled(
            cache, f"{tag}-train-pass{p}", {**base, "files": train_key, "seed": seed, "augment": True},
            lambda: embed_videos(model, train_items, space=cfg.space, spec=spec, windowing=Windowing("random"),
                                 augment=True, flip=cfg.flip, seed=seed, batch_size=cfg.batch_size,
                                 num_workers=cfg.num_workers, progress=progress,
                                 desc=f"{tag} train pass {p + 1}/{cfg.train_passes}"))
        if p == 0:
            skipped.merge(pooled.skipped)
        xs.append(pooled.features)
        ys.append(train_labels[pooled.valid])
    test = _test_features(model, test_items, spec, cfg, cache, base, tag, progress)
    skipped.merge(test.skipped)
    return np.concatenate(xs), np.concatenate(ys), test.features, test_labels[test.valid], skipped


def _test_features(model, items, spec, cfg, cache, base, tag, progress) -> PooledFeatures:
    windowing = Windowing("even", cfg.test_windows)
    return cached_pooled(
        cache, f"{tag}-test", {**base, "files": files_key(items), "windows": cfg.test_windows},
        lambda: embed_videos(model, items, space=cfg.space, spec=spec, windowing=windowing,
                             batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=progress,
                             desc=f"{tag} test ({cfg.test_windows} windows)"))


def fit_and_score(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *, C: float | None,
    classifier: str = "svm", seed: int = 0, groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fits a :class:`LinearProbe` (C given, or selected on held-out training rows) and scores the test set."""
    selection = None
    if C is None:
        C, selection = select_c(train_x, train_y, kind=classifier, groups=groups, seed=seed)
    probe = LinearProbe(kind=classifier, C=C, seed=seed).fit(train_x, train_y)
    scores = probe.decision_function(test_x)
    # Map test labels onto the probe's class columns; a test class never seen in training counts as wrong.
    column = {c: i for i, c in enumerate(probe.classes_.tolist())}
    padded = np.concatenate([scores, np.full((len(scores), 1), -np.inf)], axis=1)
    labels = np.array([column.get(y, padded.shape[1] - 1) for y in test_y.tolist()], dtype=np.int64)
    result = topk_accuracy(padded, labels, ks=(1, 5))
    result.update({"C": C, "fit_seconds": probe.fit_seconds, "num_train_rows": int(len(train_x)),
                   "num_test": int(len(test_x)), "num_classes_present": int(len(np.unique(train_y)))})
    if selection is not None:
        result["C_selection"] = {f"{c:g}": acc for c, acc in selection.items()}
    return result


def _load_splits(data_dir: Path, dataset: str, splits: Sequence[int], video_root: str | None,
                 seed: int) -> tuple[str, list[ClassificationSplit]]:
    dataset = detect_video_layout(data_dir) if dataset == "auto" else dataset
    if dataset == "ucf101":
        return dataset, ucf101_splits(data_dir, tuple(splits))
    if dataset == "hmdb51":
        return dataset, hmdb51_splits(data_dir, tuple(splits), video_root)
    if dataset == "folder":
        return dataset, [folder_split(data_dir, seed=seed)]
    raise ValueError(f"unknown video dataset {dataset!r} (ucf101, hmdb51, folder or auto)")


def backbone_name(model: torch.nn.Module) -> str:
    """The video backbone's name and width (for the published C table), e.g. ``tsm_resnet50x2``."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return ""
    name = cfg.video_backbone
    args = cfg.video_backbone_args
    if name.startswith("tsm"):
        width = args.get("width_mult", 1)
        return f"tsm_resnet{args.get('depth', 50)}" + (f"x{width}" if width != 1 else "")
    return name


def evaluate_video_probe(
    model: torch.nn.Module,
    data_dir: str | Path,
    *,
    dataset: str = "auto",
    splits: Sequence[int] = (1, 2, 3),
    cfg: VideoProbeConfig | None = None,
    video_root: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Runs the video linear probe on every requested split; returns per-split metrics and their mean.

    Args:
        model: a frozen MMV model.
        data_dir: the dataset root in one of the layouts of :mod:`mmv.eval.datasets`.
        dataset: ``ucf101``, ``hmdb51``, ``folder`` or ``auto`` (detected from the folder).
        splits: official split numbers (UCF101/HMDB51).
        cfg: protocol options.
        video_root: HMDB51 videos folder when not under ``data_dir``.
        cache_dir: where features are cached (None: no cache).
        progress: tqdm bars.
        allow_partial: evaluate a UCF101/HMDB51 copy that lacks some listed videos (every result is then marked
            partial); without it such a copy is refused before any feature is computed.

    Raises:
        PartialDatasetError: Listed videos are missing and ``allow_partial`` is False.
        FileNotFoundError: None of the listed videos is on disk (the message names the folder searched).
    """
    cfg = cfg or VideoProbeConfig()
    data_dir = Path(data_dir)
    dataset, split_list = _load_splits(data_dir, dataset, splits, video_root, cfg.seed)
    coverage = _coverage_of(split_list, allow_partial)
    C = cfg.C
    if C is None and dataset in ("ucf101", "hmdb51"):
        C = published_c(dataset, backbone_name(model))
    cache = FeatureCache(cache_dir, model_checksum(model))
    per_split = {}
    for split in split_list:
        logger.info("%s %s: %d train / %d test videos, %d classes", dataset, split.name, len(split.train),
                    len(split.test), len(split.classes))
        _require_both_sides(dataset, split)
        train_x, train_y, test_x, test_y, skipped = split_features(model, split, cfg, cache, progress, tag=dataset)
        skipped.merge(split.skipped)
        groups = np.tile(np.arange(len(train_x) // max(cfg.train_passes, 1)), cfg.train_passes)
        result = fit_and_score(train_x, train_y, test_x, test_y, C=C, classifier=cfg.classifier, seed=cfg.seed,
                               groups=groups if len(groups) == len(train_x) else None)
        result["skipped"] = skipped.as_dict()
        if split.coverage is not None:
            result["coverage"] = split.coverage.as_dict(missing_files=False)
        per_split[split.name] = result
    options = {**asdict(cfg), "spec": asdict(cfg.spec or preprocess_of(model).video), "C": C}
    return summarise_splits("video linear probe", dataset, data_dir, per_split, len(split_list[0].classes), options,
                            coverage)


def _coverage_of(splits: list[ClassificationSplit], allow_partial: bool) -> Coverage | None:
    """The coverage of every split together, checked against ``allow_partial``; None for a folder dataset."""
    coverages = [split.coverage for split in splits if split.coverage is not None]
    if not coverages:
        return None
    coverage = Coverage.union(coverages)
    require_coverage(coverage, allow_partial)
    return coverage


def _require_both_sides(dataset: str, split: ClassificationSplit) -> None:
    for side, files in (("training", split.train), ("test", split.test)):
        if not files:
            counts = split.coverage.by_part() if split.coverage is not None else {}
            raise ValueError(f"{dataset} {split.name}: no {side} video on disk ({counts}); leave the split out "
                             f"(--splits) or complete the copy")


def summarise_splits(task: str, dataset: str, data_dir: Path, per_split: dict[str, dict[str, Any]],
                     num_classes: int, options: dict[str, Any], coverage: Coverage | None = None) -> dict[str, Any]:
    """The report of a probe: per-split results, their mean and std, chance, and the coverage of a benchmark.

    Chance is that of the classes the classifier was trained on (all of them, unless a partial copy lacks some).
    """
    top1 = mean_and_std([r["top1"] for r in per_split.values()])
    top5 = mean_and_std([r["top5"] for r in per_split.values()])
    present = [r.get("num_classes_present", num_classes) or num_classes for r in per_split.values()]
    out = {
        "task": task, "dataset": dataset, "data": str(data_dir), "num_classes": num_classes,
        "mean": {"top1": top1[0], "top1_std": top1[1], "top5": top5[0], "top5_std": top5[1]},
        "chance": {"top1": float(np.mean([100.0 / n for n in present])),
                   "top5": float(np.mean([100.0 * min(5, n) / n for n in present]))},
        "splits": per_split, "options": options,
    }
    if coverage is not None:
        out.update(coverage=coverage.as_dict(), partial=not coverage.complete)
    return out


def probe_table(result: dict[str, Any], split_word: str = "split") -> str:
    """Markdown: one row per split and a mean row; for a benchmark, its coverage on every row and beneath."""
    coverage, partial = result.get("coverage"), result.get("partial", False)
    overall = coverage_cells(coverage, coverage, partial)  # the coverage cell of the mean and chance rows
    rows = [[name, r["top1"], r["top5"], r["num_train_rows"], r["num_test"], f"{r['C']:g}", r["skipped"]["total"]]
            + coverage_cells(r.get("coverage"), coverage, partial) for name, r in result["splits"].items()]
    mean = result["mean"]
    rows.append([f"**mean** ({len(result['splits'])} {split_word}s)", f"{mean['top1']:.2f} ± {mean['top1_std']:.2f}",
                 f"{mean['top5']:.2f} ± {mean['top5_std']:.2f}", "", "", "", ""] + overall)
    rows.append(["chance", result["chance"]["top1"], result["chance"]["top5"], "", "", "", ""] + overall)
    classes = f"{result['num_classes']} classes"
    if partial:
        classes = f"PARTIAL copy: {coverage['classes_present']} of {result['num_classes']} classes"
    head = f"### {result['task']}: {result['dataset']} ({classes})\n\n"
    headers = [split_word, "top-1 %", "top-5 %", "train rows", "test", "C", "skipped"]
    table = head + markdown_table(headers + (["coverage"] if coverage is not None else []), rows)
    return table + (f"\n\n{coverage_markdown(coverage)}" if coverage is not None else "")

