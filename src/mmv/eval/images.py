"""Images through the video network: linear probes on image folders and PASCAL VOC 2007 mAP.

Three ways to apply a video model to images are compared (paper Table 3):

* ``naive``: the deflated network (:func:`mmv.deflate`) on the image ("n-def");
* ``trained``: the deflated network whose BN γ/β were trained to match the video network
  (:func:`mmv.eval.deflation.train_deflated_bn`, ``mmv deflate``) ("def");
* ``video``: the video network on a static clip of ``static_frames`` copies of the image ("i-inf").

Features are the visual backbone output (``vid_repr``). The classifier protocol for images is unconfirmed in the
paper (fact sheet §4); we use the same StandardScaler + LinearSVC as the video probe, with C selected on a held-out
fifth of the training images. VOC 2007: one binary classifier per class trained on ``trainval`` and scored on
``test``; images marked difficult (0) for a class are left out of that class's training and scoring (the devkit
rule); AP is the VOC 2007 devkit's 11-point interpolated AP by default (``ap_method="area"`` gives the VOC 2010+
area under the interpolated curve).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mmv.eval.classifiers import C_GRID, LinearProbe
from mmv.eval.datasets import (
    VOC_CLASSES,
    Coverage,
    coverage_cell,
    coverage_markdown,
    image_folder_split,
    require_coverage,
    voc2007,
)
from mmv.data.windows import MediaItem
from mmv.eval.features import cached_pooled, embed_images, files_key, preprocess_of
from mmv.eval.io import FeatureCache, forget_checksum, markdown_table, model_checksum
from mmv.eval.linear_probe import fit_and_score
from mmv.eval.metrics import average_precision

logger = logging.getLogger(__name__)

VARIANTS = ("naive", "trained", "video")


@dataclass
class ImageEvalConfig:
    """Options of the image evaluations.

    Attributes:
        spec: resize and crop (an :class:`~mmv.preprocess.ImagePreprocess`); None: the model's.
        static_frames: frames of the static clip for the ``video`` variant (the paper feeds 32).
        C: SVM C; None selects it on held-out training images.
        classifier: ``svm``, ``logreg`` or ``torch``.
        ap_method: ``11point`` (VOC 2007 devkit) or ``area``.
        batch_size: images per forward pass.
        num_workers: image-loading processes.
        seed: seed of the C selection.
    """

    spec: Any = None
    static_frames: int = 32
    C: float | None = None
    classifier: str = "svm"
    ap_method: str = "11point"
    batch_size: int = 16
    num_workers: int = 0
    seed: int = 0


def build_variants(
    model: torch.nn.Module, variants: Sequence[str], trained: torch.nn.Module | None
) -> dict[str, tuple[torch.nn.Module, int | None]]:
    """``{variant: (network, static_frames or None)}``; ``trained`` must be given for the ``trained`` variant.

    A model that is already deflated can only be evaluated as it is (variant ``given``).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown image variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    if getattr(model, "deflated", False):
        return {"given": (model, None)}
    import mmv

    out: dict[str, tuple[torch.nn.Module, int | None]] = {}
    for name in variants:
        if name == "naive":
            naive = copy.deepcopy(model)
            forget_checksum(naive)  # the copy inherits the video model's checksum, but deflation changes weights
            out[name] = (mmv.deflate(naive).eval(), None)
        elif name == "trained":
            if trained is None:
                raise ValueError("the 'trained' variant needs a BN-trained deflated model (mmv deflate / --deflated)")
            out[name] = (trained, None)
        else:
            out[name] = (model, -1)  # static_frames filled in by the caller
    return out


def image_features(net: torch.nn.Module, frames: int | None, paths: list[Path], cfg: ImageEvalConfig,
                   cache_dir: Any, tag: str, progress: bool):
    """Cached ``vid_repr`` of images: a deflated ``net`` (``frames`` None) or static clips of ``frames`` frames."""
    items = [MediaItem(p) for p in paths]
    spec = cfg.spec or preprocess_of(net).image
    cache = FeatureCache(cache_dir, model_checksum(net))
    options = {"image": asdict(spec), "static_frames": frames, "files": files_key(items)}
    return cached_pooled(cache, tag, options, lambda: embed_images(
        net, items, spec=spec, static_frames=frames, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
        progress=progress, desc=tag))


def evaluate_image_folder(
    model: torch.nn.Module,
    data_dir: str | Path,
    *,
    variants: Sequence[str] = VARIANTS,
    trained: torch.nn.Module | None = None,
    cfg: ImageEvalConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Linear probe on ``train/<class>/`` vs ``val/<class>/`` for each variant: top-1/top-5."""
    cfg = cfg or ImageEvalConfig()
    split = image_folder_split(data_dir)
    train_y = np.array([f.label for f in split.train])
    test_y = np.array([f.label for f in split.test])
    results = {}
    for name, (net, frames) in build_variants(model, variants, trained).items():
        frames = cfg.static_frames if frames == -1 else frames
        train = image_features(net, frames, [f.path for f in split.train], cfg, cache_dir, f"images-train-{name}",
                               progress)
        test = image_features(net, frames, [f.path for f in split.test], cfg, cache_dir, f"images-val-{name}",
                              progress)
        result = fit_and_score(train.features, train_y[train.valid], test.features, test_y[test.valid], C=cfg.C,
                               classifier=cfg.classifier, seed=cfg.seed)
        result["skipped"] = {"train": train.skipped.as_dict(), "val": test.skipped.as_dict()}
        results[name] = result
    num_classes = len(split.classes)
    return {"task": "image linear probe", "dataset": "image folder", "data": str(data_dir),
            "num_classes": num_classes, "variants": results,
            "chance": {"top1": 100.0 / num_classes, "top5": 100.0 * min(5, num_classes) / num_classes},
            "options": asdict(cfg)}


def voc_map(train_x: np.ndarray, train_targets: np.ndarray, test_x: np.ndarray, test_targets: np.ndarray, *,
            C: float | None, ap_method: str, classifier: str = "svm", seed: int = 0,
            class_names: Sequence[str] = VOC_CLASSES) -> dict[str, Any]:
    """Per-class one-vs-rest classifiers and AP; ``targets`` hold 1 / -1 / 0 (difficult, ignored).

    Without C, one C for all classes is chosen by mAP on a held-out fifth of the training images.
    """
    selection = None
    if C is None:
        rng = np.random.default_rng(seed)
        held_out = rng.random(len(train_x)) < 0.2
        selection = {}
        for c in C_GRID:
            selection[c] = _map(train_x[~held_out], train_targets[~held_out], train_x[held_out],
                                train_targets[held_out], c, ap_method, classifier, seed)[0]
        C = max(sorted(C_GRID), key=lambda c: -np.inf if np.isnan(selection[c]) else selection[c])
    mean_ap, per_class = _map(train_x, train_targets, test_x, test_targets, C, ap_method, classifier, seed)
    out = {"mAP": mean_ap, "per_class_AP": dict(zip(class_names, per_class)), "C": C, "ap_method": ap_method}
    if selection is not None:
        out["C_selection"] = {f"{c:g}": v for c, v in selection.items()}
    return out


def _map(train_x, train_t, test_x, test_t, C, ap_method, classifier, seed) -> tuple[float, list[float]]:
    aps = []
    for k in range(train_t.shape[1]):
        keep_train, keep_test = train_t[:, k] != 0, test_t[:, k] != 0
        y = (train_t[keep_train, k] > 0).astype(np.int64)
        if len(np.unique(y)) < 2 or not (test_t[keep_test, k] > 0).any():
            aps.append(float("nan"))  # a class absent from one side cannot be scored
            continue
        probe = LinearProbe(kind=classifier, C=C, seed=seed).fit(train_x[keep_train], y)
        scores = probe.decision_function(test_x[keep_test])[:, 1]
        aps.append(100.0 * average_precision(scores, test_t[keep_test, k] > 0, ap_method))
    valid = [a for a in aps if not np.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), aps


def evaluate_voc2007(
    model: torch.nn.Module,
    data_dir: str | Path,
    *,
    variants: Sequence[str] = VARIANTS,
    trained: torch.nn.Module | None = None,
    cfg: ImageEvalConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """PASCAL VOC 2007 classification mAP (train on trainval, score on test) for each variant.

    A copy lacking some of the listed images is refused unless ``allow_partial`` (results are then marked
    partial); the missing images are skipped (reason ``missing``).
    """
    cfg = cfg or ImageEvalConfig()
    trainval, test = voc2007(data_dir, "trainval"), voc2007(data_dir, "test")
    coverage = Coverage.union([trainval.coverage, test.coverage])
    require_coverage(coverage, allow_partial)
    results = {}
    for name, (net, frames) in build_variants(model, variants, trained).items():
        frames = cfg.static_frames if frames == -1 else frames
        train = image_features(net, frames, trainval.paths, cfg, cache_dir, f"voc07-trainval-{name}", progress)
        held = image_features(net, frames, test.paths, cfg, cache_dir, f"voc07-test-{name}", progress)
        result = voc_map(train.features, trainval.targets[train.valid], held.features, test.targets[held.valid],
                         C=cfg.C, ap_method=cfg.ap_method, classifier=cfg.classifier, seed=cfg.seed)
        result["skipped"] = {"trainval": train.skipped.as_dict(), "test": held.skipped.as_dict()}
        results[name] = result
    # Chance over the test images that were scored (all of them in a complete copy).
    scored = test.targets[[path.is_file() for path in test.paths]]
    positives = (scored > 0).sum(axis=0)
    counted = (scored != 0).sum(axis=0)
    chance = float(np.mean(100.0 * positives[positives > 0] / counted[positives > 0]))
    return {"task": "PASCAL VOC 2007 classification", "dataset": "voc2007", "data": str(data_dir),
            "variants": results, "chance": {"mAP": chance}, "options": asdict(cfg),
            "coverage": coverage.as_dict(), "partial": not coverage.complete}


def image_table(result: dict[str, Any]) -> str:
    """Markdown: one row per variant (top-1/top-5 or mAP), then chance."""
    names = {"naive": "naive deflation (n-def)", "trained": "deflation + trained BN (def)",
             "video": "video network on static clip (i-inf)", "given": "given network"}
    if result["dataset"] == "voc2007":
        coverage, partial = result["coverage"], result["partial"]
        cell = coverage_cell(coverage, partial)
        rows = [[names.get(k, k), r["mAP"], f"{r['C']:g}", cell] for k, r in result["variants"].items()]
        rows.append(["chance (positive rate)", result["chance"]["mAP"], "", cell])
        table = markdown_table(["variant", f"mAP % ({result['options']['ap_method']})", "C", "coverage"], rows)
        table += f"\n\n{coverage_markdown(coverage)}"
    else:
        rows = [[names.get(k, k), r["top1"], r["top5"], f"{r['C']:g}"] for k, r in result["variants"].items()]
        rows.append(["chance", result["chance"]["top1"], result["chance"]["top5"], ""])
        table = markdown_table(["variant", "top-1 %", "top-5 %", "C"], rows)
    return f"### {result['task']}" + (" (PARTIAL copy)" if result.get("partial") else "") + "\n\n" + table
