"""Feature extraction: windows of files through a frozen MMV model, batched, pooled and cached.

Every protocol in :mod:`mmv.eval` goes through the functions here, and so do ``mmv embed`` and ``mmv.embed_*``.
Files become windows in :mod:`mmv.data.windows` (the clip pipeline shared with training); this module only batches
the windows, runs the model, pools the windows of each file and caches the results:

* :func:`embed_videos` runs ``model.encode_video`` on video windows and returns ``[num_windows, D]`` per file;
* :func:`embed_audio` does the same for the soundtrack of videos or for audio files (``model.encode_audio``);
* :func:`embed_texts` tokenises sentences and runs ``model.encode_text``;
* :func:`embed_images` runs a (deflated) visual network on images, or the video network on static clips.

Settings default to the model's own (``model.preprocess``). Unreadable files never stop a run: they are skipped
and counted by reason in a :class:`~mmv.data.skips.SkipReport`. Decoding runs in a ``torch.utils.data.DataLoader``
(``num_workers`` processes); the model runs in the main process on batches of ``batch_size`` windows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmv.data.skips import SkipReport
from mmv.data.windows import AudioWindows, ImageWindows, MediaItem, VideoWindows, Windowing, item_list

logger = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Per-item window embeddings; ``features[i]`` is None when item i was skipped."""

    features: list[np.ndarray | None]
    windows: list[list[tuple[float, float]]]
    skipped: SkipReport

    def valid(self) -> np.ndarray:
        """Indices of the items that were embedded."""
        return np.array([i for i, f in enumerate(self.features) if f is not None], dtype=np.int64)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def model_pixels(frames: torch.Tensor, pixel_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """uint8 frames (0-255) as the float pixels the model takes (``pixel_range``, [0, 1] for MMV)."""
    low, high = pixel_range
    x = frames.float().div_(255.0)
    return x if (low, high) == (0.0, 1.0) else x.mul_(high - low).add_(low)


# ---------------------------------------------------------------------------------------------------- batching
def _first(batch: list) -> Any:
    return batch[0]


def _run_batched(
    loader: Iterable, encode: Callable[[torch.Tensor], torch.Tensor], items: list[MediaItem], batch_size: int,
    progress: bool, desc: str,
) -> Embeddings:
    """Feeds decoded windows through ``encode`` in batches of ``batch_size`` and regroups them per item."""
    from tqdm import tqdm

    features: list[np.ndarray | None] = [None] * len(items)
    windows: list[list[tuple[float, float]]] = [[] for _ in items]
    skipped = SkipReport()
    pending: list[tuple[int, np.ndarray]] = []
    parts: dict[int, list[np.ndarray]] = {}
    counts: dict[int, int] = {}

    def flush() -> None:
        batch = torch.from_numpy(np.stack([clip for _, clip in pending]))
        out = encode(batch).float().cpu().numpy()
        for (idx, _), row in zip(pending, out):
            parts[idx].append(row)
            if len(parts[idx]) == counts[idx]:
                features[idx] = np.stack(parts.pop(idx))
        pending.clear()

    for index, clips, item_windows, error in tqdm(loader, total=len(items), desc=desc, disable=not progress,
                                                 unit="file"):
        if error is not None:
            skipped.add(error)
            continue
        windows[index] = item_windows
        parts[index], counts[index] = [], len(clips)
        for clip in clips:
            pending.append((index, clip))
            if len(pending) >= batch_size:
                flush()
    if pending:
        flush()
    if skipped.total:
        skipped.log_summary(logger, desc)  # one line per reason; each file is in the JSON report
    return Embeddings(features, windows, skipped)


def _loader(dataset: Dataset, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_first,
                      persistent_workers=False)


def device_of(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def preprocess_of(model: torch.nn.Module) -> Any:
    """The model's :class:`~mmv.preprocess.Preprocess` (the library's defaults for a module without one)."""
    from mmv.preprocess import Preprocess

    return getattr(model, "preprocess", None) or Preprocess()


# ------------------------------------------------------------------------------------------------------ encoding
def embed_videos(
    model: torch.nn.Module,
    items: Iterable[MediaItem | str | Path],
    *,
    space: str = "repr",
    spec: Any = None,
    windowing: Windowing = Windowing(),
    augment: bool = False,
    flip: bool = True,
    seed: int = 0,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "video features",
) -> Embeddings:
    """Embeds windows of video files with ``model.encode_video(clips, space)`` (model in eval mode).

    Args:
        model: an MMV model (or anything with ``encode_video``).
        items: files, or :class:`~mmv.data.windows.MediaItem` segments.
        space: ``"repr"`` (backbone output), ``"va"`` or ``"vt"``.
        spec: a :class:`~mmv.preprocess.VideoPreprocess`; None: the model's (``model.preprocess.video``).
        windowing: which windows per item.
        augment: random crop and horizontal flip instead of the centre crop (training features).
        flip: random flips when augmenting.
        seed: seed of random windows and augmentation (each item draws from ``(seed, item index)``).
        batch_size: clips per forward pass.
        num_workers: DataLoader processes decoding in parallel.
        progress: show a tqdm bar.
        desc: the bar's label.
    """
    items = item_list(items)
    spec = spec or preprocess_of(model).video
    model.eval()
    device = device_of(model)

    def encode(clips: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_video(model_pixels(clips.to(device), spec.pixel_range), space=space)

    dataset = VideoWindows(items, spec, windowing, augment=augment, flip=flip, seed=seed)
    return _run_batched(_loader(dataset, num_workers), encode, items, batch_size, progress, desc)


def embed_audio(
    model: torch.nn.Module,
    items: Iterable[MediaItem | str | Path],
    *,
    space: str = "repr",
    spec: Any = None,
    windowing: Windowing = Windowing(),
    whole: bool = False,
    seed: int = 0,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "audio features",
) -> Embeddings:
    """Embeds audio windows with ``model.encode_audio(log_mel, space)``.

    ``spec`` is a :class:`~mmv.preprocess.AudioPreprocess` (None: the model's); ``whole`` embeds each file (or
    segment) as one window, whatever its length. Files without an audio track are skipped (reason ``no_audio``).
    """
    items = item_list(items)
    spec = spec or preprocess_of(model).audio
    model.eval()
    device = device_of(model)

    def encode(mels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_audio(mels.to(device), space=space)

    dataset = AudioWindows(items, spec, windowing, whole=whole, seed=seed)
    return _run_batched(_loader(dataset, num_workers), encode, items, batch_size, progress, desc)


def embed_texts(
    model: torch.nn.Module,
    sentences: Sequence[str],
    tokenizer: Any = None,
    *,
    space: str = "vt",
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """``[N, D]`` embeddings of sentences.

    ``tokenizer`` maps a list of strings to ``[N, L]`` int64 word ids; None: the model's (its stored vocabulary
    and text settings, ``model.preprocess.text.tokenizer()``).
    """
    from tqdm import tqdm

    if tokenizer is None:
        tokenizer = preprocess_of(model).text.tokenizer().encode_batch
    model.eval()
    device = device_of(model)
    vocab_size = getattr(getattr(getattr(model, "text_backbone", None), "cfg", None), "vocab_size", None)
    out = []
    for first in tqdm(range(0, len(sentences), batch_size), desc="text features", disable=not progress):
        ids = torch.as_tensor(np.asarray(tokenizer(list(sentences[first:first + batch_size]))), dtype=torch.int64)
        if vocab_size is not None and ids.numel() and int(ids.max()) >= vocab_size:
            raise ValueError(f"the vocabulary gives word ids up to {int(ids.max())} but the model's text branch has "
                             f"{vocab_size} entries; use the vocabulary the model was trained with")
        with torch.inference_mode():
            out.append(model.encode_text(ids.to(device), space=space).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def embed_images(
    model: torch.nn.Module,
    items: Iterable[MediaItem | str | Path],
    *,
    space: str = "repr",
    spec: Any = None,
    static_frames: int | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "image features",
) -> Embeddings:
    """Embeds images: through a deflated model (``static_frames`` None: input ``[B, H, W, 3]``), or through the
    video network as a static clip of ``static_frames`` copies of the image (``[B, T, H, W, 3]``).

    ``spec`` is an :class:`~mmv.preprocess.ImagePreprocess` (None: the model's).
    """
    items = item_list(items)
    preprocess = preprocess_of(model)
    spec = spec or preprocess.image
    model.eval()
    device = device_of(model)

    def encode(images: torch.Tensor) -> torch.Tensor:
        x = model_pixels(images.to(device), preprocess.video.pixel_range)
        if static_frames is not None:
            x = x[:, None].expand(-1, static_frames, -1, -1, -1)
        with torch.inference_mode():
            return model.encode_video(x, space=space)

    return _run_batched(_loader(ImageWindows(items, spec), num_workers), encode, items, batch_size, progress, desc)


# ------------------------------------------------------------------------------------------------------ caching
@dataclass
class PooledFeatures:
    """Window-pooled features of the items that could be embedded.

    Attributes:
        features: ``[num_valid, D]`` float32.
        valid: ``[num_valid]`` indices into the item list.
        skipped: the skipped items by reason.
    """

    features: np.ndarray
    valid: np.ndarray
    skipped: SkipReport


@dataclass
class WindowFeatures:
    """Every window's features, flat: ``rows [sum of windows, D]`` and ``owner`` (the item index of each row)."""

    rows: np.ndarray
    owner: np.ndarray
    skipped: SkipReport

    def pooled(self, normalize: bool = False) -> PooledFeatures:
        """Mean over each item's windows (L2-normalised per window first when ``normalize``)."""
        rows = l2_normalize(self.rows) if normalize else self.rows
        valid, inverse = np.unique(self.owner, return_inverse=True)
        sums = np.zeros((len(valid), rows.shape[1]), dtype=np.float64)
        np.add.at(sums, inverse, rows)
        counts = np.bincount(inverse, minlength=len(valid))[:, None]
        return PooledFeatures((sums / counts).astype(np.float32), valid.astype(np.int64), self.skipped)


def cached_windows(
    cache: Any, name: str, options: dict[str, Any], compute: Callable[[], Embeddings]
) -> WindowFeatures:
    """Every window's features from ``cache`` (a :class:`~mmv.eval.io.FeatureCache`) or from ``compute()``.

    The cache entry also stores which items were skipped and why, so a cached run reports the same skips.
    """
    arrays = cache.load(name, options) if cache is not None else None
    if arrays is None:
        embeddings = compute()
        valid = embeddings.valid()
        width = next((f.shape[1] for f in embeddings.features if f is not None), 0)
        paths = list(embeddings.skipped.files)
        reasons = [reason for reason, _ in embeddings.skipped.files.values()]
        arrays = {
            "rows": (np.concatenate([embeddings.features[i] for i in valid]) if len(valid)
                     else np.zeros((0, width))).astype(np.float32),
            "owner": np.concatenate([np.full(len(embeddings.features[i]), i) for i in valid]).astype(np.int64)
            if len(valid) else np.zeros(0, dtype=np.int64),
            "skipped_reason": np.array(reasons, dtype=str),
            "skipped_path": np.array(paths, dtype=str),
        }
        if cache is not None:
            cache.save(name, options, arrays)
    skipped = SkipReport()
    for reason, path in zip(arrays["skipped_reason"].tolist(), arrays["skipped_path"].tolist()):
        skipped.add(reason, path)
    return WindowFeatures(arrays["rows"], arrays["owner"].astype(np.int64), skipped)


def cached_pooled(
    cache: Any, name: str, options: dict[str, Any], compute: Callable[[], Embeddings], normalize: bool = False
) -> PooledFeatures:
    """Window-pooled features, cached (see :func:`cached_windows`)."""
    return cached_windows(cache, name, options, compute).pooled(normalize)


def files_key(paths: Iterable[Any]) -> str:
    """A hash of an ordered list of files (with their sizes), for cache keys."""
    from mmv.eval.io import options_key

    entries = []
    for p in paths:
        path = Path(p.path if isinstance(p, MediaItem) else p)
        size = path.stat().st_size if path.exists() else -1
        extra = (p.start, p.end) if isinstance(p, MediaItem) else ()
        entries.append([str(path), size, *extra])
    return options_key({"files": entries})
