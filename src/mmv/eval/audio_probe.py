"""Audio linear probe on ESC-50 (5-fold cross-validation) and on any folder-per-class audio dataset.

Features are the pooled audio backbone output (``aud_repr``: the ResNet's last block after BN+ReLU, averaged over
time and frequency), the same tensor the paper's "last_conv" becomes after pooling.

Clip length (fact sheet §1.4 marks the paper's choice unconfirmed; a recollection says 2 s). ESC-50 clips are 5 s.
We cut each clip into ``windows`` (default 5) evenly spaced windows of ``clip_seconds`` (default 2 s): training
uses every window as its own row (time shifts as the only augmentation, since the paper's audio augmentation is
unknown), and a test clip is classified from its window-averaged feature. ``--clip-seconds 5 --windows 1`` takes
whole clips instead. The SVM C has no published value for ESC-50, so it is chosen on a held-out fifth of the
training clips of each fold (windows of one clip stay together), never on the test fold.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv.data.files import AUDIO_EXTENSIONS
from mmv.eval.datasets import esc50, folder_split, require_coverage
from mmv.data.windows import MediaItem, Windowing
from mmv.eval.features import cached_windows, embed_audio, files_key, preprocess_of
from mmv.eval.io import FeatureCache, model_checksum
from mmv.eval.linear_probe import summarise_splits, fit_and_score

logger = logging.getLogger(__name__)


@dataclass
class AudioProbeConfig:
    """Options of the audio probe.

    Attributes:
        spec: window length, sample rate and spectrogram (an :class:`~mmv.preprocess.AudioPreprocess`); None:
            the model's own (``model.preprocess.audio``).
        windows: evenly spaced windows per clip.
        C: SVM C; None selects it per fold on held-out training clips.
        classifier: ``svm``, ``logreg`` or ``torch``.
        space: ``repr`` (backbone, the paper's) or ``va``/``vt``.
        batch_size: spectrograms per forward pass.
        num_workers: decoding processes.
        seed: seed of the C selection.
    """

    spec: Any = None
    windows: int = 5
    C: float | None = None
    classifier: str = "svm"
    space: str = "repr"
    batch_size: int = 16
    num_workers: int = 0
    seed: int = 0


def audio_window_features(model: torch.nn.Module, paths: list[Path], cfg: AudioProbeConfig,
                          cache: FeatureCache | None, progress: bool, tag: str):
    """Every window's features of ``paths`` (see :class:`~mmv.eval.features.WindowFeatures`), cached."""
    items = [MediaItem(p) for p in paths]
    spec = cfg.spec or preprocess_of(model).audio
    options = {"space": cfg.space, "spec": asdict(spec), "windows": cfg.windows, "files": files_key(items)}
    return cached_windows(
        cache, f"{tag}-audio", options,
        lambda: embed_audio(model, items, space=cfg.space, spec=spec, windowing=Windowing("even", cfg.windows),
                            batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=progress,
                            desc=f"{tag} audio features"))


def probe_folds(rows: np.ndarray, owner: np.ndarray, labels: np.ndarray, folds: np.ndarray, cfg: AudioProbeConfig,
                test_folds: list[int] | None = None) -> dict[str, dict[str, Any]]:
    """Cross-validation: for each fold, train on the other folds' windows, test on window-averaged clips.

    Args:
        rows: ``[R, D]`` window features; ``owner [R]`` the clip of each row.
        labels, folds: ``[num_clips]`` class and fold per clip.
        test_folds: which folds to hold out in turn (default: every fold).
    """
    per_fold = {}
    for fold in (np.unique(folds).tolist() if test_folds is None else test_folds):
        train_rows = folds[owner] != fold
        test_clips = np.unique(owner[~train_rows])
        test_x = np.stack([rows[owner == c].mean(axis=0) for c in test_clips])
        result = fit_and_score(rows[train_rows], labels[owner[train_rows]], test_x, labels[test_clips], C=cfg.C,
                               classifier=cfg.classifier, seed=cfg.seed, groups=owner[train_rows])
        per_fold[f"fold{fold}"] = result
    return per_fold


def evaluate_esc50(
    model: torch.nn.Module,
    data_dir: str | Path,
    *,
    cfg: AudioProbeConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """ESC-50 5-fold linear probe: per-fold top-1/top-5 and their mean.

    A copy lacking some of the clips ``meta/esc50.csv`` lists is refused unless ``allow_partial`` (every result is
    then marked partial; see :func:`mmv.eval.datasets.require_coverage`).
    """
    cfg = cfg or AudioProbeConfig()
    data = esc50(data_dir)
    require_coverage(data.coverage, allow_partial)
    cache = FeatureCache(cache_dir, model_checksum(model))
    feats = audio_window_features(model, [f.path for f in data.files], cfg, cache, progress, "esc50")
    feats.skipped.merge(data.skipped)
    labels = np.array([f.label for f in data.files], dtype=np.int64)
    per_fold = probe_folds(feats.rows, feats.owner, labels, data.folds, cfg)
    by_fold = data.coverage.by_part()
    for name, result in per_fold.items():
        result["skipped"] = feats.skipped.as_dict()
        result["coverage"] = by_fold.get(name)  # the clips of the test fold
    return summarise_splits("audio linear probe", "esc50", Path(data_dir), per_fold, len(data.classes),
                            _options(cfg, model), data.coverage)


def evaluate_audio_folder(
    model: torch.nn.Module,
    data_dir: str | Path,
    *,
    cfg: AudioProbeConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Audio probe on ``<root>/{train,test}/<class>/`` or ``<root>/<class>/`` (one seeded 70/30 split)."""
    cfg = cfg or AudioProbeConfig()
    split = folder_split(data_dir, extensions=AUDIO_EXTENSIONS, seed=cfg.seed)
    files = split.train + split.test
    cache = FeatureCache(cache_dir, model_checksum(model))
    feats = audio_window_features(model, [f.path for f in files], cfg, cache, progress, "audio-folder")
    labels = np.array([f.label for f in files], dtype=np.int64)
    folds = np.array([0] * len(split.train) + [1] * len(split.test))
    result = probe_folds(feats.rows, feats.owner, labels, folds, cfg, test_folds=[1])["fold1"]
    result["skipped"] = feats.skipped.as_dict()
    return summarise_splits("audio linear probe", "folder", Path(data_dir), {split.name: result}, len(split.classes),
                      _options(cfg, model))


def _options(cfg: AudioProbeConfig, model: torch.nn.Module) -> dict[str, Any]:
    return {**asdict(cfg), "spec": asdict(cfg.spec or preprocess_of(model).audio)}
