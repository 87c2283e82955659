"""Feature extraction: videos, audio, text and images through a frozen MMV model.

Every protocol in :mod:`mmv.eval` goes through the functions here, and so does ``mmv embed`` (users' own files).

* :func:`embed_videos` decodes windows of video files (optionally a time segment of each file), runs
  ``model.encode_video`` and returns ``[num_windows, D]`` per file. Windows: one centred clip, N evenly spaced
  clips, sliding clips every ``stride`` seconds, or (training features) one random augmented clip.
* :func:`embed_audio` does the same for the audio track of videos or for audio files, through a log-mel
  spectrogram and ``model.encode_audio``.
* :func:`embed_texts` tokenises sentences with a vocabulary and runs ``model.encode_text``.
* :func:`embed_images` loads images with Pillow and runs a (deflated) visual network on images or static clips.

Unreadable files never stop a run: they are skipped and counted by reason in a :class:`~mmv.data.skips.SkipReport`.
Decoding runs in a ``torch.utils.data.DataLoader`` (``num_workers`` processes); the model runs in the main process
on batches of ``batch_size`` clips.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmv.data.skips import SkipReport

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class VideoClipSpec:
    """How a video window is decoded and cropped.

    Defaults follow the released UCF101 evaluation (fact sheet §5.2): 32 frames with stride 2 from 25-fps video
    (12.5 fps over 2.56 s), short side 224, 224 centre crop.
    """

    num_frames: int = 32
    fps: float = 12.5
    min_resize: int = 224
    crop_size: int = 224
    flip: bool = True  # random horizontal flips in augmented (training-feature) passes

    def __post_init__(self) -> None:
        if self.crop_size > self.min_resize:
            raise ValueError(f"crop ({self.crop_size}) must not exceed the resized short side ({self.min_resize})")

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


@dataclass(frozen=True)
class AudioClipSpec:
    """How an audio window is cut and turned into a log-mel spectrogram (mel settings: :class:`MelConfig`).

    ``seconds`` None takes the whole file (or the whole segment) as one window.
    """

    seconds: float | None = 2.0
    sample_rate: int = 48000


@dataclass(frozen=True)
class Windowing:
    """Which windows of a file (or segment) are embedded.

    Attributes:
        mode: ``"one"`` (a centred window), ``"even"`` (``count`` evenly spaced windows, first at the start and last
            ending at the end), ``"sliding"`` (every ``stride`` seconds) or ``"random"`` (one random window,
            for augmented training features).
        count: windows for ``"even"``.
        stride: seconds between windows for ``"sliding"``.
    """

    mode: str = "even"
    count: int = 10
    stride: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("one", "even", "sliding", "random"):
            raise ValueError(f"windowing mode must be one/even/sliding/random, got {self.mode!r}")
        if self.count < 1 or self.stride <= 0:
            raise ValueError(f"need count >= 1 and stride > 0, got {self.count} and {self.stride}")

    @classmethod
    def parse(cls, windows: str, stride: float | None = None) -> "Windowing":
        """From the command-line form: ``one``, an integer N, or ``sliding`` (with ``stride``)."""
        if windows == "one":
            return cls("one", 1)
        if windows == "sliding":
            if stride is None:
                raise ValueError("--windows sliding needs --stride SECONDS")
            return cls("sliding", 1, stride)
        try:
            return cls("even", int(windows))
        except ValueError:
            raise ValueError(f"--windows must be 'one', an integer or 'sliding', got {windows!r}") from None

    def starts(self, duration: float, clip_seconds: float, rng: np.random.Generator | None = None) -> list[float]:
        """Window starts (seconds from the start of the span) for a span of ``duration`` seconds."""
        from mmv.data.media import evenly_spaced_starts, sliding_starts

        if self.mode == "one":
            return evenly_spaced_starts(duration, clip_seconds, 1)
        if self.mode == "even":
            return evenly_spaced_starts(duration, clip_seconds, self.count)
        if self.mode == "sliding":
            return sliding_starts(duration, clip_seconds, self.stride)
        rng = rng if rng is not None else np.random.default_rng()
        return [float(rng.uniform(0.0, max(0.0, duration - clip_seconds)))]


@dataclass(frozen=True)
class MediaItem:
    """A file to embed, or the ``[start, end)`` segment of one (seconds)."""

    path: Path
    start: float | None = None
    end: float | None = None


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


def item_list(items: Iterable[MediaItem | str | Path]) -> list[MediaItem]:
    return [it if isinstance(it, MediaItem) else MediaItem(Path(it)) for it in items]


# ---------------------------------------------------------------------------------------------------- decoding
def _crop_video(frames: np.ndarray, crop: int, generator: torch.Generator | None, flip: bool = True) -> torch.Tensor:
    """Centre crop (``generator`` None) or random crop plus (if ``flip``) random horizontal flip (augmentation), uint8."""
    from mmv.data.transforms import center_crop, horizontal_flip, random_crop

    video = torch.from_numpy(frames)
    if generator is None:
        return center_crop(video, crop).contiguous()
    video = random_crop(video, crop, generator)
    if flip and torch.rand((), generator=generator).item() < 0.5:
        video = horizontal_flip(video)
    return video.contiguous()


def _span(item: MediaItem, duration: float) -> tuple[float, float]:
    start = 0.0 if item.start is None else max(0.0, item.start)
    end = duration if item.end is None else min(item.end, duration)
    return start, max(start, end)


class _VideoWindows(Dataset):
    """Decodes all windows of one item; returns ``(index, uint8 [W, T, H, W, 3] or None, windows, error)``."""

    def __init__(self, items: list[MediaItem], spec: VideoClipSpec, windowing: Windowing, augment: bool,
                 seed: int) -> None:
        self.items, self.spec, self.windowing, self.augment, self.seed = items, spec, windowing, augment, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from mmv.data.media import MediaError, decode_clip, probe

        item = self.items[index]
        # Per-item generators: the same windows and crops whatever the worker count or order.
        rng = np.random.default_rng([self.seed, index])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62))) if self.augment else None
        try:
            span_start, span_end = _span(item, probe(item.path).duration)
            starts = self.windowing.starts(span_end - span_start, self.spec.seconds, rng)
            clips, windows = [], []
            for offset in starts:
                clip = decode_clip(item.path, span_start + offset, self.spec.num_frames, self.spec.fps,
                                   with_audio=False, short_side=self.spec.min_resize)
                clips.append(_crop_video(clip.frames, self.spec.crop_size, generator, self.spec.flip).numpy())
                windows.append((clip.start, clip.end))
            return index, np.stack(clips), windows, None
        except MediaError as err:
            return index, None, [], err.reason
        except (OSError, ValueError) as err:
            return index, None, [], f"unreadable ({type(err).__name__})"


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
            skipped.add(error, items[index].path)
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
        logger.warning("%s: %s", desc, skipped.summary())
    return Embeddings(features, windows, skipped)


def _loader(dataset: Dataset, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_first,
                      persistent_workers=False)


def _device_of(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def embed_videos(
    model: torch.nn.Module,
    items: Iterable[MediaItem | str | Path],
    *,
    space: str = "repr",
    spec: VideoClipSpec = VideoClipSpec(),
    windowing: Windowing = Windowing(),
    augment: bool = False,
    seed: int = 0,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "video features",
) -> Embeddings:
    """Embeds windows of video files with ``model.encode_video(clips, space)`` (model in eval mode).

    Args:
        model: an MMV model (or anything with ``encode_video``).
        items: files, or :class:`MediaItem` segments.
        space: ``"repr"`` (backbone output), ``"va"`` or ``"vt"``.
        spec: frames, frame rate, resize and crop.
        windowing: which windows per item.
        augment: random crop and horizontal flip instead of the centre crop (training features).
        seed: seed of random windows and augmentation (each item draws from ``(seed, item index)``).
        batch_size: clips per forward pass.
        num_workers: DataLoader processes decoding in parallel.
        progress: show a tqdm bar.
        desc: the bar's label.
    """
    items = item_list(items)
    model.eval()
    device = _device_of(model)

    def encode(clips: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_video(clips.to(device).float().div_(255.0), space=space)

    dataset = _VideoWindows(items, spec, windowing, augment, seed)
    return _run_batched(_loader(dataset, num_workers), encode, items, batch_size, progress, desc)


# ------------------------------------------------------------------------------------------------------- audio
def read_audio_file(path: str | Path, sample_rate: int) -> np.ndarray:
    """The whole first audio stream of a file as mono float32 at ``sample_rate`` (channels averaged).

    Raises:
        MediaError: missing, unreadable, or without an audio stream.
    """
    import av

    from mmv.data.media import MediaError

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "missing", "no such file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(path, "not_media", f"cannot open: {err}") from err
    try:
        if not container.streams.audio:
            raise MediaError(path, "no_audio", "the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sample_rate)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
    except av.error.FFmpegError as err:
        raise MediaError(path, "decode_error", f"decoding failed: {err}") from err
    finally:
        container.close()
    if not chunks:
        raise MediaError(path, "empty", "no audio samples could be decoded")
    return np.clip(np.concatenate(chunks).astype(np.float32), -1.0, 1.0)


def _audio_span(item: MediaItem, sample_rate: int, seconds: float | None) -> np.ndarray:
    """The waveform of an item (whole file or segment): from the audio track of a video, or from an audio file."""
    from mmv.data.media import MediaError, decode_clip, probe

    info = probe(item.path)
    if not info.has_audio:
        raise MediaError(item.path, "no_audio", "the file has no audio track")
    start, end = _span(item, info.duration)
    if info.has_video:
        # One frame whose display time spans the whole segment: decode_clip then returns exactly its audio.
        length = max(end - start, 1.0 / sample_rate)
        clip = decode_clip(item.path, start, 1, 1.0 / length, with_audio=True, audio_rate=sample_rate, short_side=16)
        return clip.audio
    wave = read_audio_file(item.path, sample_rate)
    return wave[int(round(start * sample_rate)):int(round(end * sample_rate))]


class _AudioWindows(Dataset):
    """Returns ``(index, float32 [W, T', F] log-mel or None, windows, error)`` for one item."""

    def __init__(self, items: list[MediaItem], spec: AudioClipSpec, windowing: Windowing, mel_config: Any,
                 seed: int) -> None:
        self.items, self.spec, self.windowing, self.mel_config, self.seed = items, spec, windowing, mel_config, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from mmv.data.audio import log_mel_spectrogram
        from mmv.data.media import MediaError

        item = self.items[index]
        rate = self.spec.sample_rate
        try:
            wave = _audio_span(item, rate, self.spec.seconds)
            if wave is None or wave.size == 0:
                raise MediaError(item.path, "no_audio", "no audio samples in the requested span")
            offset = item.start or 0.0
            seconds = self.spec.seconds or len(wave) / rate
            rng = np.random.default_rng([self.seed, index]) if self.windowing.mode == "random" else None
            mels, windows = [], []
            for start in self.windowing.starts(len(wave) / rate, seconds, rng):
                first, count = int(round(start * rate)), int(round(seconds * rate))
                piece = wave[first:first + count]
                piece = np.pad(piece, (0, count - len(piece)))  # windows past the end are zero-padded
                mels.append(np.asarray(log_mel_spectrogram(piece, self.mel_config), dtype=np.float32))
                windows.append((offset + start, offset + start + seconds))
            return index, np.stack(mels), windows, None
        except MediaError as err:
            return index, None, [], err.reason
        except (OSError, ValueError) as err:
            return index, None, [], f"unreadable ({type(err).__name__})"


def default_mel_config(sample_rate: int) -> Any:
    """The paper's spectrogram (80 mel bins, 2048/1024 window/hop at 48 kHz) scaled to ``sample_rate``."""
    from mmv.data.audio import MelConfig

    scale = sample_rate / 48000
    # The window and hop keep their duration (42.7 / 21.3 ms); the top mel edge stays below Nyquist.
    return MelConfig(sample_rate=sample_rate, n_fft=int(round(2048 * scale)), hop_length=int(round(1024 * scale)),
                     fmax=min(7600.0, sample_rate / 2))


def embed_audio(
    model: torch.nn.Module,
    items: Iterable[MediaItem | str | Path],
    *,
    space: str = "repr",
    spec: AudioClipSpec = AudioClipSpec(),
    windowing: Windowing = Windowing(),
    mel_config: Any = None,
    seed: int = 0,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "audio features",
) -> Embeddings:
    """Embeds audio windows (``spec.seconds`` long) with ``model.encode_audio(log_mel, space)``.

    Files without an audio track are skipped (reason ``no_audio``). ``mel_config`` None uses
    :func:`default_mel_config` at ``spec.sample_rate``.
    """
    items = item_list(items)
    model.eval()
    device = _device_of(model)
    mel_config = mel_config if mel_config is not None else default_mel_config(spec.sample_rate)

    def encode(mels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_audio(mels.to(device), space=space)

    dataset = _AudioWindows(items, spec, windowing, mel_config, seed)
    return _run_batched(_loader(dataset, num_workers), encode, items, batch_size, progress, desc)


# -------------------------------------------------------------------------------------------------------- text
def embed_texts(
    model: torch.nn.Module,
    sentences: Sequence[str],
    tokenizer: Any,
    *,
    space: str = "vt",
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """``[N, D]`` embeddings of sentences; ``tokenizer`` maps a list of strings to ``[N, L]`` int64 word ids."""
    from tqdm import tqdm

    model.eval()
    device = _device_of(model)
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


# ------------------------------------------------------------------------------------------------------ images
def load_image(path: str | Path, size: int, crop: int) -> np.ndarray:
    """An image as uint8 ``[crop, crop, 3]``: RGB, short side resized to ``size`` (bilinear), centre crop.

    Raises:
        MediaError: the file is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    from mmv.data.media import MediaError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            scale = size / min(w, h)
            image = image.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BILINEAR)
            w, h = image.size
            left, top = (w - crop) // 2, (h - crop) // 2
            return np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)
    except FileNotFoundError as err:
        raise MediaError(path, "missing", "no such file") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MediaError(path, "not_image", f"not a readable image: {err}") from err


class _Images(Dataset):
    def __init__(self, items: list[MediaItem], size: int, crop: int) -> None:
        self.items, self.size, self.crop = items, size, crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from mmv.data.media import MediaError

        try:
            return index, load_image(self.items[index].path, self.size, self.crop)[None], [(0.0, 0.0)], None
        except MediaError as err:
            return index, None, [], err.reason


def embed_images(
    model: torch.nn.Module,
    items: Iterable[MediaItem | str | Path],
    *,
    space: str = "repr",
    size: int = 256,
    crop: int = 224,
    static_frames: int | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "image features",
) -> Embeddings:
    """Embeds images: through a deflated model (``static_frames`` None: input ``[B, H, W, 3]``), or through the
    video network as a static clip of ``static_frames`` copies of the image (``[B, T, H, W, 3]``)."""
    items = item_list(items)
    model.eval()
    device = _device_of(model)

    def encode(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device).float().div_(255.0)
        if static_frames is not None:
            x = x[:, None].expand(-1, static_frames, -1, -1, -1)
        with torch.inference_mode():
            return model.encode_video(x, space=space)

    return _run_batched(_loader(_Images(items, size, crop), num_workers), encode, items, batch_size, progress, desc)


def spec_options(*specs: Any) -> dict[str, Any]:
    """The dataclass fields of the given specs, for cache keys and reports."""
    out: dict[str, Any] = {}
    for spec in specs:
        out.update({f"{type(spec).__name__}.{k}": v for k, v in asdict(spec).items()})
    return out


def iter_chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for first in range(0, len(values), size):
        yield values[first:first + size]


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
