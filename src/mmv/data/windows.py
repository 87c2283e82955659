"""Windows of files as model inputs: the clip pipeline shared by training, evaluation and embedding.

A file (or a ``[start, end)`` segment of it, a :class:`MediaItem`) becomes windows: video clips of the model's
frames, rate, resize and crop (:class:`mmv.preprocess.VideoPreprocess`), audio windows as log-mel spectrograms
(:class:`mmv.preprocess.AudioPreprocess`), or an image as a one-frame window (:class:`mmv.preprocess.ImagePreprocess`).
Which windows: :class:`Windowing` (training's random clip, evaluation's evenly spaced windows, sliding windows, one
centred window).

Every path goes through the same steps as training's :class:`mmv.data.datasets.ClipBuilder`: decoding by seeking
(:func:`mmv.data.media.decode_clip`, large frames shrunk while decoding to :func:`decode_limit`), the audio decoder
(:func:`mmv.data.media.decode_audio`), the crops and flips of :class:`mmv.data.transforms.VideoTransform`, the
spectrogram of :func:`mmv.data.audio.log_mel_spectrogram`.

The datasets here (:class:`VideoWindows`, :class:`AudioWindows`, :class:`ImageWindows`) return one item's windows at
a time, as ``(index, array or None, [(start, end), ...], SkippedSample or None)``: a file that cannot be used comes
back with its reason instead of raising, so a DataLoader over a folder never stops on a bad file. Randomness (random
windows, crops, flips) is drawn from a generator seeded by ``(seed, item index)``, so the windows do not depend on
the number of DataLoader workers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmv.data.skips import SkippedSample

__all__ = [
    "AudioWindows",
    "ImageWindows",
    "MediaItem",
    "VideoWindows",
    "Windowing",
    "audio_windows",
    "image_window",
    "item_list",
    "sample_generator",
    "video_windows",
    "waveform_windows",
]


def decode_limit(min_resize: int) -> int:
    """The largest short side frames keep while decoding, for a model that resizes to ``min_resize``.

    Frames are shrunk while decoding (FFmpeg's swscale) only down to twice the model's size, and the final resize
    is torch's antialiased bilinear (:func:`mmv.data.transforms.resize_short_side`) in every path: training,
    evaluation and embedding see the same pixels, and a 1080p clip never sits in memory at full size.
    """
    return 2 * min_resize


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, index): the same clip whatever the worker layout."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True)
class Windowing:
    """Which windows of a file (or segment) are taken.

    Attributes:
        mode: ``"one"`` (a centred window), ``"even"`` (``count`` evenly spaced windows, the first at the start and
            the last ending at the end), ``"sliding"`` (every ``stride`` seconds, each inside the file) or
            ``"random"`` (one window at a uniformly random start: training clips and augmented probe passes).
        count: Windows for ``"even"``.
        stride: Seconds between windows for ``"sliding"``.
    """

    mode: str = "even"
    count: int = 10
    stride: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("one", "even", "sliding", "random"):
            raise ValueError(f"windowing mode must be one/even/sliding/random, got {self.mode!r}")
        if self.count < 1 or not self.stride > 0:
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

    def starts(self, duration: float, clip_seconds: float, generator: torch.Generator | None = None) -> list[float]:
        """Window starts (seconds from the start of the span) for a span of ``duration`` seconds.

        A span shorter than a window gives windows at 0 (the decoders pad: the last frame repeats, sound is
        zero-padded).
        """
        from mmv.data.media import evenly_spaced_starts, random_start, sliding_starts

        if self.mode == "one":
            return evenly_spaced_starts(duration, clip_seconds, 1)
        if self.mode == "even":
            return evenly_spaced_starts(duration, clip_seconds, self.count)
        if self.mode == "sliding":
            return sliding_starts(duration, clip_seconds, self.stride)
        return [random_start(duration, clip_seconds, generator)]


@dataclass(frozen=True)
class MediaItem:
    """A file, or the ``[start, end)`` segment of one (seconds; None: from the start / to the end)."""

    path: Path
    start: float | None = None
    end: float | None = None

    def span(self, duration: float) -> tuple[float, float]:
        """The segment within a file of ``duration`` seconds."""
        start = 0.0 if self.start is None else max(0.0, self.start)
        end = duration if self.end is None else min(self.end, duration)
        return start, max(start, end)


def item_list(items: Iterable[MediaItem | str | Path]) -> list[MediaItem]:
    return [it if isinstance(it, MediaItem) else MediaItem(Path(it)) for it in items]


# --------------------------------------------------------------------------------------------------------------------
# One file's windows.


def video_windows(item: MediaItem, spec: Any, windowing: Windowing | None, *, starts: Sequence[float] | None = None,
                  generator: torch.Generator | None = None, augment: bool = False,
                  flip: bool = True) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The video windows of one file: uint8 ``[W, T, crop, crop, 3]`` and each window's ``(start, end)``.

    Args:
        item: The file or segment.
        spec: A :class:`mmv.preprocess.VideoPreprocess` (frames, rate, resize, crop).
        windowing: Which windows.
        starts: Window starts in seconds from the start of the file, instead of ``windowing`` (a search index's
            planned segments).
        generator: Random windows and crops (seed it for repeatable results).
        augment: Random crop and (with ``flip``) random horizontal flip instead of the centre crop.
        flip: Random flips when augmenting (off where left and right carry meaning another modality shares).

    Raises:
        MediaError: The file cannot be used.
    """
    from mmv.data.media import decode_clips, probe
    from mmv.data.transforms import VideoTransform

    transform = VideoTransform(train=augment, crop_size=spec.crop, min_resize=spec.min_resize, flip=flip,
                               color_jitter=False)
    if starts is None:
        span_start, span_end = item.span(probe(item.path).duration)
        starts = [span_start + offset for offset in windowing.starts(span_end - span_start, spec.seconds, generator)]
    decoded = decode_clips(item.path, list(starts), spec.num_frames, spec.fps,
                           max_short_side=decode_limit(spec.min_resize))
    clips = [transform.geometry(frames, generator).numpy() for frames in decoded]
    return np.stack(clips), [(start, start + spec.seconds) for start in starts]


def audio_windows(item: MediaItem, spec: Any, windowing: Windowing, *, generator: torch.Generator | None = None,
                  whole: bool = False) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The audio windows of one file (the soundtrack of a video, or an audio file) as log-mel spectrograms.

    Args:
        item: The file or segment.
        spec: A :class:`mmv.preprocess.AudioPreprocess` (window length, sample rate, spectrogram).
        windowing: Which windows (ignored with ``whole``).
        generator: Random windows.
        whole: One window of the whole span, whatever its length, instead of windows of ``spec.clip_seconds``.

    Returns:
        float32 ``[W, T', F]`` and each window's ``(start, end)`` in the file's timeline. Windows running past the
        end of the sound are zero-padded.

    Raises:
        MediaError: The file cannot be used or has no sound in the span (``no_audio``).
    """
    from mmv.data.media import MediaError, decode_audio, probe

    info = probe(item.path)
    if not info.has_audio:
        raise MediaError(item.path, "no_audio", "the file has no audio track")
    span_start, span_end = item.span(info.duration)
    rate = spec.sample_rate
    wave = decode_audio(item.path, span_start, max(span_end, span_start + 1.0 / rate), sample_rate=rate)
    if wave.size == 0:
        raise MediaError(item.path, "no_audio", "no audio samples in the requested span")
    return waveform_windows(wave, spec, windowing, generator=generator, whole=whole, offset=span_start)


def waveform_windows(wave: np.ndarray, spec: Any, windowing: Windowing, *, generator: torch.Generator | None = None,
                     whole: bool = False, offset: float = 0.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A mono waveform at ``spec.sample_rate`` cut into windows and turned into log-mel spectrograms.

    Args:
        wave: ``[S]`` float samples in [-1, 1].
        spec: A :class:`mmv.preprocess.AudioPreprocess`.
        windowing: Which windows (ignored with ``whole``).
        generator: Random windows.
        whole: One window of the whole waveform.
        offset: Time of the waveform's first sample (reported in the windows' times).

    Returns:
        float32 ``[W, T', F]`` and each window's ``(start, end)``; windows past the end are zero-padded.
    """
    from mmv.data.audio import log_mel_spectrogram

    rate = spec.sample_rate
    seconds = len(wave) / rate if whole else spec.clip_seconds
    starts = [0.0] if whole else windowing.starts(len(wave) / rate, seconds, generator)
    mels, windows = [], []
    for start in starts:
        first, count = int(round(start * rate)), int(round(seconds * rate))
        piece = np.asarray(wave[first:first + count], dtype=np.float32)
        piece = np.pad(piece, (0, count - len(piece)))
        mels.append(np.asarray(log_mel_spectrogram(piece, spec.mel), dtype=np.float32))
        windows.append((offset + start, offset + start + seconds))
    return np.stack(mels), windows


def image_window(path: str | Path, spec: Any) -> np.ndarray:
    """An image as one uint8 ``[crop, crop, 3]`` window: short side resized to ``spec.min_resize``, centre crop.

    Raises:
        MediaError: The file is missing or not a readable image.
    """
    from mmv.data.media import decode_image
    from mmv.data.transforms import VideoTransform

    frames = decode_image(path)[None]  # one frame: the image is a one-frame clip through the same transform
    transform = VideoTransform(train=False, crop_size=spec.crop, min_resize=spec.min_resize)
    return transform.geometry(frames)[0].numpy()


# --------------------------------------------------------------------------------------------------------------------
# Datasets of items (one item per index, all its windows at once).


class VideoWindows(Dataset):
    """``(index, uint8 [W, T, crop, crop, 3] or None, windows, SkippedSample or None)`` for each item."""

    def __init__(self, items: list[MediaItem], spec: Any, windowing: Windowing, *, augment: bool = False,
                 flip: bool = True, seed: int = 0) -> None:
        self.items, self.spec, self.windowing = items, spec, windowing
        self.augment, self.flip, self.seed = augment, flip, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from mmv.data.media import MediaError

        generator = sample_generator(self.seed, 0, index)
        try:
            clips, windows = video_windows(self.items[index], self.spec, self.windowing, generator=generator,
                                           augment=self.augment, flip=self.flip)
            return index, clips, windows, None
        except (MediaError, OSError, ValueError) as err:
            return index, None, [], SkippedSample.from_error(self.items[index].path, err)


class AudioWindows(Dataset):
    """``(index, float32 [W, T', F] log-mel or None, windows, SkippedSample or None)`` for each item."""

    def __init__(self, items: list[MediaItem], spec: Any, windowing: Windowing, *, whole: bool = False,
                 seed: int = 0) -> None:
        self.items, self.spec, self.windowing, self.whole, self.seed = items, spec, windowing, whole, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from mmv.data.media import MediaError

        generator = sample_generator(self.seed, 0, index)
        try:
            mels, windows = audio_windows(self.items[index], self.spec, self.windowing, generator=generator,
                                          whole=self.whole)
            return index, mels, windows, None
        except (MediaError, OSError, ValueError) as err:
            return index, None, [], SkippedSample.from_error(self.items[index].path, err)


class ImageWindows(Dataset):
    """``(index, uint8 [1, crop, crop, 3] or None, [(nan, nan)], SkippedSample or None)`` for each image."""

    def __init__(self, items: list[MediaItem], spec: Any) -> None:
        self.items, self.spec = items, spec

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from mmv.data.media import MediaError

        try:
            return index, image_window(self.items[index].path, self.spec)[None], [(math.nan, math.nan)], None
        except (MediaError, OSError, ValueError) as err:
            return index, None, [], SkippedSample.from_error(self.items[index].path, err)
