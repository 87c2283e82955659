"""Video and audio decoding with PyAV: probe a file, decode one clip by seeking to it.

A clip is ``num_frames`` frames sampled at ``fps`` from ``start`` seconds, plus the audio of the same span (mono,
resampled, zero-padded past the end of the file). Decoding seeks to the keyframe before the clip and decodes forward,
so the cost of a clip does not depend on where it lies in the file.

Timing rules (see ``docs/data_decoding.md``):

* Times are seconds from the start of the container (its ``start_time``), the timeline that ``probe``'s duration uses.
* Frame ``i`` is the frame *displayed* at ``start + i / fps``: the last frame whose presentation time is ``<=`` that
  instant (with a 1 ms tolerance that absorbs millisecond-rounded timestamps in Matroska/WebM). This handles odd and
  variable frame rates without assuming a constant rate. Instants before the first frame take the first frame;
  instants after the last frame repeat the last frame.
* The audio span is ``[start, start + num_frames / fps)``, exactly ``round(num_frames / fps * audio_rate)`` samples.

Threading: decoders and the pixel-format converter run single-threaded by default (``threads=1``); parallelism comes
from DataLoader workers. FFmpeg thread pools do not survive ``fork``: an FFmpeg object created in the parent and used
or freed in a worker waits forever for threads that do not exist there (the known PyAV hang in DataLoader workers).
So every container is opened and closed (in a ``finally`` block) within one call, and the one object kept between
calls, the frame converter, is per process and per thread. Repeated calls do not accumulate memory or file handles.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

__all__ = [
    "Clip",
    "MediaError",
    "MediaInfo",
    "decode_audio",
    "decode_clip",
    "decode_clips",
    "decode_image",
    "evenly_spaced_starts",
    "probe",
    "random_start",
    "sliding_starts",
]

# NOTE: Matroska/WebM store timestamps in milliseconds, so a 29.97 fps frame can be stamped up to 0.5 ms later than
# its true time. A frame counts as displayed at t when its time is <= t + this tolerance.
_TIME_TOLERANCE = 1e-3
# Audio is decoded this far (seconds) past the clip, so that the resampler filters the clip's last samples with real
# signal after them, not with the zeros of its end-of-stream flush.
_AUDIO_MARGIN = 0.05
# Audio decoding starts this far (seconds) before the clip: transform codecs (AAC, Vorbis, Opus) need the previous
# frame to reconstruct the next one (overlapped transforms), so the first frame after a seek is not usable.
_AUDIO_PREROLL = 0.25
# Clips of one file closer than this (seconds between one's end and the next one's start) are decoded in one pass:
# continuing to decode is cheaper than a seek, which decodes again from the keyframe before the next clip.
SEQUENTIAL_GAP = 4.0
# A clip that needs frames past the last decodable one is refused as truncated when the header claims more than this
# many seconds beyond that frame; within it, the last frame repeats (a clip running past the true end).
_TRUNCATION_SLACK = 1.0
# File signatures of the containers FFmpeg reads; a file that starts with one but cannot be opened is truncated or
# damaged, anything else is not a media file at all.
_CONTAINER_MAGIC = (
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM (EBML)
    (0, b"RIFF"),  # AVI, WAV
    (0, b"OggS"),
    (0, b"fLaC"),
    (0, b"ID3"),  # MP3 with an ID3 tag
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
    (4, b"ftyp"),  # MP4 / MOV / M4A / 3GP
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
)


class MediaError(Exception):
    """A media file that cannot be used, with a short machine-readable reason.

    Datasets catch this error to skip the file and count it by ``reason``.

    Attributes:
        path: The offending file.
        reason: A short code: ``missing``, ``empty``, ``not_media``, ``truncated``, ``no_video``, ``decode_error`` or
            ``too_short``.
        detail: A human-readable description of the problem.
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {detail} [{reason}]")

    def __reduce__(self):  # keeps the attributes when the error crosses a DataLoader worker boundary
        return (type(self), (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class MediaInfo:
    """What ``probe`` learns from a file's headers (nothing is decoded).

    Attributes:
        duration: Seconds, from the container (or the longest stream when the container does not say).
        has_video: Whether there is a video stream (cover art / attached pictures do not count).
        has_audio: Whether there is an audio stream.
        fps: Average frame rate of the video stream; None without video or when the file does not say.
        width: Frame width in pixels; None without video.
        height: Frame height in pixels; None without video.
        audio_sample_rate: Samples per second of the audio stream; None without audio.
        num_audio_channels: Channels of the audio stream; None without audio.
    """

    duration: float
    has_video: bool
    has_audio: bool
    fps: float | None
    width: int | None
    height: int | None
    audio_sample_rate: int | None
    num_audio_channels: int | None


@dataclass
class Clip:
    """A decoded clip.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        audio: ``[S]`` float32 mono waveform in [-1, 1] at the requested rate, or None (no audio track, or audio not
            requested).
        start: Start of the clip in seconds.
        end: End of the clip in seconds (``start + T / fps``).
        has_audio: Whether the file has an audio track.
    """

    frames: np.ndarray
    audio: np.ndarray | None
    start: float
    end: float
    has_audio: bool


def probe(path: str | os.PathLike) -> MediaInfo:
    """Reads a media file's stream information without decoding it.

    Args:
        path: A video or audio file.

    Returns:
        The file's ``MediaInfo``.

    Raises:
        MediaError: The file is missing, empty, not a media file, or damaged beyond opening.
    """
    with _opened(path, "reading failed") as container:
        video = _video_stream(container)
        audio = _audio_stream(container)
        if video is None and audio is None:
            raise MediaError(path, "not_media", "the file has neither a video nor an audio stream")
        fps = None
        if video is not None:
            rate = video.average_rate or video.guessed_rate
            fps = float(rate) if rate else None
        return MediaInfo(
            duration=_duration(container, path),
            has_video=video is not None,
            has_audio=audio is not None,
            fps=fps,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            num_audio_channels=audio.codec_context.channels if audio is not None else None,
        )


def decode_clip(
    path: str | os.PathLike,
    start: float,
    num_frames: int,
    fps: float,
    *,
    with_audio: bool = True,
    audio_rate: int = 48000,
    short_side: int | None = None,
    max_short_side: int | None = None,
    threads: int = 1,
) -> Clip:
    """Decodes ``num_frames`` frames at ``fps`` from ``start`` seconds, and the audio of the same span.

    Seeks to the keyframe before ``start`` and decodes forward only as far as the clip needs.

    Args:
        path: A video file.
        start: Clip start in seconds (>= 0, before the end of the file).
        num_frames: Number of frames T.
        fps: Sampling rate of the clip's frames (independent of the file's frame rate).
        with_audio: Whether to decode the audio span.
        audio_rate: Output sample rate of the audio.
        short_side: If given, frames are resized while decoding so that their shorter side has this many pixels
            (aspect ratio kept), which saves memory for large videos.
        max_short_side: If given (and ``short_side`` is not), frames whose shorter side is longer are shrunk to
            it while decoding; smaller frames keep their size. The clip pipeline decodes so, at twice the model's
            resize, and leaves the final resize to :mod:`mmv.data.transforms` (the same pixels in training and
            evaluation, full-resolution frames never in memory).
        threads: Decoder threads per stream. Keep 1 inside DataLoader workers (see the module docstring).

    Returns:
        The ``Clip``. Frames past the end of the video repeat its last frame; audio past the end is zeros.

    Raises:
        MediaError: The file is unusable (reasons as in ``MediaError``); ``too_short`` when ``start`` is at or past
            the end of the file.
        ValueError: An argument is out of range.
    """
    _check_clip_args(start, num_frames, fps, audio_rate, short_side or max_short_side, threads)
    with _opened(path, "decoding failed") as container:
        video, duration = _stream_and_duration(container, path, "video", start)
        origin = _origin(container)
        _configure_decoder(video, threads)
        targets = [origin + start + i / fps for i in range(num_frames)]
        size = _decode_size(video, short_side, max_short_side)
        frames = _read_video(container, video, targets, size, duration + origin, path, threads)
        audio_stream = _audio_stream(container)
        audio = None
        if with_audio and audio_stream is not None:
            _configure_decoder(audio_stream, threads)
            num_samples = round(num_frames / fps * audio_rate)
            audio = _read_audio(container, audio_stream, origin + start, num_samples, audio_rate)
        return Clip(frames, audio, start, start + num_frames / fps, audio_stream is not None)


def decode_audio(
    path: str | os.PathLike,
    start: float = 0.0,
    end: float | None = None,
    *,
    sample_rate: int = 48000,
    threads: int = 1,
) -> np.ndarray:
    """Decodes the audio of ``[start, end)`` seconds of a video or audio file, mono, resampled.

    This is the library's one audio decoder: clips (:func:`decode_clip`), evaluation windows, speech recognition and
    embedding all read sound through it. Times are seconds from the container's start, as for video, so sample
    ``i`` of the result plays at ``start + i / sample_rate`` in the file's timeline: a soundtrack that starts late
    is preceded by silence, and a span running past the end of the sound is padded with zeros.

    Args:
        path: A video or audio file.
        start: First second of the span (>= 0).
        end: End of the span in seconds; None: the end of the file (its duration).
        sample_rate: Output sample rate.
        threads: Decoder threads (keep 1 inside DataLoader workers, see the module docstring).

    Returns:
        ``[round((end - start) * sample_rate)]`` float32 samples in [-1, 1] (channels averaged).

    Raises:
        MediaError: The file is unusable, has no audio stream (``no_audio``), or ``start`` is at or past its end
            (``too_short``).
        ValueError: An argument is out of range.
    """
    if not (start >= 0 and math.isfinite(start)):
        raise ValueError(f"start must be a finite number >= 0, got {start}")
    if end is not None and not end > start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
    with _opened(path, "decoding the audio failed") as container:
        stream, duration = _stream_and_duration(container, path, "audio", start)
        end = duration if end is None else end
        _configure_decoder(stream, threads)
        num_samples = round((end - start) * sample_rate)
        return _read_audio(container, stream, _origin(container) + start, num_samples, sample_rate)


def decode_clips(
    path: str | os.PathLike,
    starts: list[float],
    num_frames: int,
    fps: float,
    *,
    short_side: int | None = None,
    max_short_side: int | None = None,
    threads: int = 1,
) -> list[np.ndarray]:
    """The frames of several clips of one file (as :func:`decode_clip`'s, without sound), decoded in as few passes
    as possible.

    Clips that follow each other closely (less than :data:`SEQUENTIAL_GAP` seconds apart) are read in one forward
    pass of the decoder: decoding each clip from its own seek would decode the frames between the keyframe and the
    clip again for every clip (with a keyframe every 10 s, a file cut into 2.56 s segments would be decoded about
    twice over). Clips far apart are reached by seeking, which skips what lies between them.

    Args:
        path: A video file.
        starts: Clip starts in seconds (any order; each must lie before the end of the file).
        num_frames, fps, short_side, max_short_side, threads: As for :func:`decode_clip`.

    Returns:
        One uint8 ``[num_frames, H, W, 3]`` array per start, in the order of ``starts``.

    Raises:
        MediaError: As :func:`decode_clip`.
    """
    if not starts:
        return []
    for start in starts:
        _check_clip_args(start, num_frames, fps, 1, short_side or max_short_side, threads)
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    with _opened(path, "decoding failed") as container:
        video, duration = _stream_and_duration(container, path, "video", starts[order[-1]])
        origin = _origin(container)
        _configure_decoder(video, threads)
        size = _decode_size(video, short_side, max_short_side)
        clip_seconds = num_frames / fps
        out: list[np.ndarray | None] = [None] * len(starts)
        run: list[int] = []
        for position, index in enumerate(order):
            run.append(index)
            following = order[position + 1] if position + 1 < len(order) else None
            if following is None or starts[following] - (starts[index] + clip_seconds) > SEQUENTIAL_GAP:
                # One pass needs the instants in increasing order; overlapping clips interleave theirs.
                wanted = sorted((origin + starts[i] + k / fps, i, k) for i in run for k in range(num_frames))
                frames = _read_video(container, video, [w[0] for w in wanted], size, duration + origin, path,
                                     threads)
                for i in run:
                    out[i] = np.empty((num_frames, *frames.shape[1:]), dtype=frames.dtype)
                for frame, (_, i, k) in zip(frames, wanted):
                    out[i][k] = frame
                run = []
        return out  # type: ignore[return-value]


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """A still image as uint8 ``[H, W, 3]`` RGB (Pillow; EXIF rotation applied, alpha dropped, greyscale as RGB).

    Raises:
        MediaError: The file is missing (``missing``) or not a readable image (``not_image``).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.exists(path):
        raise MediaError(path, "missing", "no such file")
    try:
        with Image.open(path) as image:
            return np.array(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MediaError(path, "not_image", f"not a readable image: {err}") from err


def evenly_spaced_starts(duration: float, clip_duration: float, n: int) -> list[float]:
    """Start times of ``n`` evenly spaced clips covering a video, for evaluation.

    The first clip starts at 0 and the last one ends at the end of the video; a single clip is centred. A video
    shorter than a clip gives ``n`` starts at 0 (the decoder pads the clip).

    Args:
        duration: Video duration in seconds.
        clip_duration: Clip duration in seconds.
        n: Number of clips.

    Returns:
        ``n`` start times in seconds, non-decreasing.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    last_start = max(0.0, duration - clip_duration)
    if n == 1:
        return [last_start / 2]
    return [last_start * i / (n - 1) for i in range(n)]


def sliding_starts(duration: float, clip_duration: float, stride: float) -> list[float]:
    """Start times of clips every ``stride`` seconds that fit entirely inside the video.

    Args:
        duration: Video duration in seconds.
        clip_duration: Clip duration in seconds.
        stride: Seconds between consecutive starts.

    Returns:
        ``[0, stride, 2 * stride, ...]`` up to the last start whose clip ends within the video; ``[0.0]`` when the
        video is shorter than one clip.
    """
    if stride <= 0:
        raise ValueError(f"stride must be > 0, got {stride}")
    last_start = duration - clip_duration
    # NOTE: the tolerance keeps a start whose clip ends exactly at the end despite float rounding.
    count = math.floor(last_start / stride + 1e-9) + 1 if last_start >= 0 else 1
    return [i * stride for i in range(count)]


def random_start(duration: float, clip_duration: float, generator: torch.Generator | None = None) -> float:
    """A start time drawn uniformly so that the clip fits in the video (0 when it cannot fit), for training.

    Args:
        duration: Video duration in seconds.
        clip_duration: Clip duration in seconds.
        generator: Source of randomness (seed it for determinism); torch's global one when None.

    Returns:
        A start time in seconds.
    """
    fraction = torch.rand((), generator=generator, dtype=torch.float64).item()
    return fraction * max(0.0, duration - clip_duration)


# --------------------------------------------------------------------------------------------------------------------
# Opening and stream information.


def _check_clip_args(start: float, num_frames: int, fps: float, audio_rate: int, short_side: int | None,
                     threads: int) -> None:
    if not (start >= 0 and math.isfinite(start)):
        raise ValueError(f"start must be a finite number >= 0, got {start}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if audio_rate < 1:
        raise ValueError(f"audio_rate must be >= 1, got {audio_rate}")
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: FFmpeg's choice), got {threads}")


@contextlib.contextmanager
def _opened(path: str | os.PathLike, failing: str) -> Iterator[av.container.InputContainer]:
    """The open file; FFmpeg's errors while reading it become ``MediaError(path, "decode_error", f"{failing}: ...")``,
    FFmpeg stopped by Ctrl-C (PyAV's interrupt callback) becomes ``KeyboardInterrupt`` (not a bad file), and the
    container is closed whatever happens."""
    container = _open(path)
    try:
        yield container
    except av.error.ExitError:
        raise KeyboardInterrupt from None
    except av.error.FFmpegError as err:
        raise MediaError(path, "decode_error", f"{failing}: {err}") from err
    finally:
        container.close()


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """Opens a file for reading, turning every failure into a ``MediaError`` with a reason."""
    if not os.path.exists(path):
        raise MediaError(path, "missing", "no such file")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise MediaError(path, "empty", "the file is empty (0 bytes)")
    try:
        return av.open(os.fspath(path), mode="r", metadata_errors="ignore")
    except av.error.ExitError:  # FFmpeg stopped by Ctrl-C: not a bad file
        raise KeyboardInterrupt from None
    except (av.error.FFmpegError, OSError) as err:
        if _has_container_signature(path):
            raise MediaError(path, "truncated", f"a media container that cannot be opened: {err}") from err
        raise MediaError(path, "not_media", f"not a media file FFmpeg can read: {err}") from err


def _has_container_signature(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if len(head) >= 1 and head[0] == 0x47 and _is_mpeg_ts(path):
        return True
    return any(head[offset:offset + len(magic)] == magic for offset, magic in _CONTAINER_MAGIC)


def _is_mpeg_ts(path: str | os.PathLike) -> bool:
    """MPEG-TS has a sync byte 0x47 every 188 bytes."""
    with open(path, "rb") as f:
        head = f.read(188 * 3 + 1)
    return len(head) > 188 * 2 and all(head[i] == 0x47 for i in (0, 188, 376))


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first video stream that is real video (not cover art stored as an attached picture)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _stream_and_duration(container: av.container.InputContainer, path: str | os.PathLike, kind: str,
                         start: float) -> tuple[av.stream.Stream, float]:
    """The file's ``video`` or ``audio`` stream and its duration, checking that ``start`` lies inside the file."""
    stream = _video_stream(container) if kind == "video" else _audio_stream(container)
    if stream is None:
        raise MediaError(path, f"no_{kind}", f"the file has no {kind} stream")
    duration = _duration(container, path)
    if start >= duration:
        raise MediaError(path, "too_short", f"start {start:.3f} s is at or past the end ({duration:.3f} s)")
    return stream, duration


def _origin(container: av.container.InputContainer) -> float:
    """Presentation time (seconds) of the container's start: clip times are measured from it."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _duration(container: av.container.InputContainer, path: str | os.PathLike) -> float:
    """Duration in seconds from the headers; scans packet timestamps (no decoding) when no header says."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    stream_ends = [
        float((stream.start_time or 0) * stream.time_base + stream.duration * stream.time_base)
        for stream in container.streams
        if stream.duration and stream.time_base
    ]
    if stream_ends:
        return max(stream_ends) - _origin(container)
    end = _scan_end_time(container)
    if end is None:
        raise MediaError(path, "decode_error", "no packet carries a timestamp; the duration is unknown")
    container.seek(0)
    return end - _origin(container)


def _scan_end_time(container: av.container.InputContainer) -> float | None:
    end = None
    for packet in container.demux():
        if packet.pts is not None and packet.time_base is not None:
            packet_end = (packet.pts + (packet.duration or 0)) * packet.time_base
            end = float(packet_end) if end is None else max(end, float(packet_end))
    return end


def _configure_decoder(stream: av.stream.Stream, threads: int) -> None:
    # NOTE: one thread avoids FFmpeg's thread pools inside forked DataLoader workers (a known hang) and the latency
    # of frame threading, which buffers several frames before returning the first.
    stream.codec_context.thread_count = threads
    stream.codec_context.thread_type = "SLICE" if threads == 1 else "AUTO"


def _decode_size(stream: av.video.stream.VideoStream, short_side: int | None,
                 max_short_side: int | None) -> tuple[int, int] | None:
    """The (width, height) frames are converted to while decoding (None: as decoded)."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if short_side is None and max_short_side is not None and min(width, height) > max_short_side:
        short_side = max_short_side
    return _output_size(width, height, short_side)


def _output_size(width: int, height: int, short_side: int | None) -> tuple[int, int] | None:
    """(width, height) with the shorter side scaled to ``short_side``; None keeps the decoded size."""
    if short_side is None or min(width, height) == short_side:
        return None
    # Long side rounded down, as DMVR's resize_smallest (and mmv.data.transforms.resize_short_side) do.
    if width <= height:
        return short_side, max(short_side, height * short_side // width)
    return max(short_side, width * short_side // height), short_side


# --------------------------------------------------------------------------------------------------------------------
# Video.


def _seek(container: av.container.InputContainer, stream: av.stream.Stream, time: float) -> None:
    """Seeks to the last keyframe at or before ``time`` (seconds), or to the start of the file."""
    origin = _origin(container)
    if time <= origin:
        container.seek(container.start_time or 0)  # AV_TIME_BASE units, whole-file seek
        return
    container.seek(int(math.floor(time / stream.time_base)), stream=stream, backward=True, any_frame=False)


def _frame_time(frame: av.frame.Frame, previous_time: float | None, step: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    # Some streams (e.g. raw elementary streams) leave pts unset: assume a constant step.
    return 0.0 if previous_time is None else previous_time + step


def _decoded_frames(container: av.container.InputContainer,
                    stream: av.stream.Stream) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yields (presentation time, frame) in increasing time from the current position, skipping out-of-order ones."""
    rate = stream.average_rate or stream.guessed_rate or 25
    step = 1.0 / float(rate)
    last_time = None
    for packet in container.demux(stream):
        for frame in packet.decode():
            time = _frame_time(frame, last_time, step)
            if last_time is not None and time <= last_time:
                continue  # a duplicate or out-of-order timestamp would break the "last frame <= t" rule
            last_time = time
            yield time, frame


_THREAD_STATE = threading.local()
_INHERITED_REFORMATTERS: list[VideoReformatter] = []


def _reformatter() -> VideoReformatter:
    """This thread's frame converter, in this process.

    A reformatter keeps its swscale context between calls while sizes and formats stay the same;
    ``frame.to_ndarray(format=...)`` builds a new context for every frame, which costs 10-20x the conversion itself
    on small frames. One per thread, since a context must not be used by two threads at once, and a new one after a
    fork: swscale's worker threads do not survive ``fork`` (DataLoader workers), and a context inherited from the
    parent waits for them forever.
    """
    pid = os.getpid()
    if getattr(_THREAD_STATE, "pid", None) != pid:
        if hasattr(_THREAD_STATE, "reformatter"):
            # NOTE: never free the parent's context here: freeing joins worker threads that do not exist in the child.
            _INHERITED_REFORMATTERS.append(_THREAD_STATE.reformatter)
        _THREAD_STATE.reformatter = VideoReformatter()
        _THREAD_STATE.pid = pid
    return _THREAD_STATE.reformatter


class _FrameSelector:
    """Assigns decoded frames to target instants: target t gets the last frame whose time is <= t."""

    def __init__(self, targets: list[float], size: tuple[int, int] | None, threads: int = 1) -> None:
        self.targets = targets
        self.size = size
        self.threads = threads  # swscale threads (0: automatic, a pool per context)
        self.reformatter = _reformatter()
        self.selected: list[np.ndarray] = []
        self.previous: tuple[float, av.VideoFrame] | None = None
        self.previous_array: np.ndarray | None = None
        self.num_decoded = 0
        self.padded = False  # whether the stream ended before the last target
        self.first_time: float | None = None

    @property
    def done(self) -> bool:
        return len(self.selected) == len(self.targets)

    def push(self, time: float, frame: av.VideoFrame) -> None:
        self.num_decoded += 1
        if self.first_time is None:
            self.first_time = time
        while not self.done and self.targets[len(self.selected)] + _TIME_TOLERANCE < time:
            # The target lies before this frame: the previous frame (or this one, when none came earlier) shows.
            self.selected.append(self._previous_as_array() if self.previous is not None else self._to_array(frame))
        self.previous = (time, frame)
        self.previous_array = None

    def finish(self) -> None:
        """At the end of the stream the last frame stays on screen."""
        self.padded = not self.done
        while not self.done and self.previous is not None:
            self.selected.append(self._previous_as_array())

    def _previous_as_array(self) -> np.ndarray:
        if self.previous_array is None:  # convert once, even when the frame fills several targets
            self.previous_array = self._to_array(self.previous[1])
        return self.previous_array

    def _to_array(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = self.size if self.size is not None else (None, None)
        rgb = self.reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation="BILINEAR",
                                        threads=self.threads)
        return rgb.to_ndarray()


def _select_frames(container: av.container.InputContainer, stream: av.stream.Stream, targets: list[float],
                   size: tuple[int, int] | None, seek_time: float, threads: int = 1) -> _FrameSelector:
    """Seeks to ``seek_time`` and decodes forward until every target has its frame (or the stream ends)."""
    _seek(container, stream, seek_time)
    selector = _FrameSelector(targets, size, threads)
    for time, frame in _decoded_frames(container, stream):
        selector.push(time, frame)
        if selector.done:
            break
    selector.finish()
    return selector


def _read_video(container: av.container.InputContainer, stream: av.stream.Stream, targets: list[float],
                size: tuple[int, int] | None, end_time: float, path: str | os.PathLike, threads: int) -> np.ndarray:
    """Decodes the frames displayed at ``targets`` (absolute seconds) as a ``[T, H, W, 3]`` uint8 array."""
    origin = _origin(container)
    back_off = 0.0
    while True:
        seek_time = targets[0] - back_off
        selector = _select_frames(container, stream, targets, size, seek_time, threads)
        at_file_start = seek_time <= origin
        if selector.first_time is not None and (selector.first_time <= targets[0] + _TIME_TOLERANCE or at_file_start):
            break
        if selector.first_time is None and at_file_start:
            raise MediaError(path, "decode_error", "no video frame could be decoded")
        # The demuxer landed after the clip start (imprecise index, or no frames there): seek further back.
        back_off = max(1.0, 2 * back_off)
    last_time = selector.previous[0]
    if selector.padded and end_time > last_time + _TRUNCATION_SLACK:
        # Padding is for clips that run past the true end; here the data stops well before the claimed end.
        raise MediaError(
            path, "truncated",
            f"video data ends at {last_time - origin:.2f} s but the file claims {end_time - origin:.2f} s; "
            f"the clip at {targets[0] - origin:.2f}-{targets[-1] - origin:.2f} s is missing",
        )
    return np.stack(selector.selected)


# --------------------------------------------------------------------------------------------------------------------
# Audio.


def _read_audio(container: av.container.InputContainer, stream: av.stream.Stream, start: float, num_samples: int,
                rate: int) -> np.ndarray:
    """Decodes ``num_samples`` mono samples at ``rate`` from ``start`` (absolute seconds); zeros where none exist."""
    origin = _origin(container)
    back_off = _AUDIO_PREROLL
    while True:
        seek_time = start - back_off
        end_time = start + num_samples / rate + _AUDIO_MARGIN
        first_time, samples = _decode_audio_from(container, stream, seek_time, end_time, rate)
        # NOTE: no tolerance here, unlike video: a first sample even 1 ms late would leave a gap of silence.
        if first_time is None or first_time <= start or seek_time <= origin:
            break
        back_off *= 2  # the demuxer landed after the clip start: seek further back
    out = np.zeros(num_samples, dtype=np.float32)
    if first_time is None:
        return out  # no audio at all from here on: silence
    offset = round((start - first_time) * rate)  # index in `samples` of the clip's first sample
    src_begin, dst_begin = max(offset, 0), max(-offset, 0)
    count = max(0, min(len(samples) - src_begin, num_samples - dst_begin))
    out[dst_begin:dst_begin + count] = samples[src_begin:src_begin + count]
    return np.clip(out, -1.0, 1.0)


def _seek_audio(container: av.container.InputContainer, stream: av.stream.Stream, time: float) -> None:
    try:
        # NOTE: in MP4 a seek to a time before the first packet (even a negative one) lands on the first packet, AAC
        # priming included, which a seek to 0 would skip (the first frame would then decode without its overlap).
        container.seek(math.floor(time / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError:
        if time > _origin(container):
            raise
        _seek(container, stream, time)  # some demuxers (AVI) refuse timestamps before the start


def _decode_audio_from(container: av.container.InputContainer, stream: av.stream.Stream, seek_time: float,
                       end_time: float, rate: int) -> tuple[float | None, np.ndarray]:
    """Decodes from the seek point until ``end_time``; returns the first sample's time and mono float32 samples."""
    _seek_audio(container, stream, seek_time)
    # NOTE: the resampler keeps the channel layout; channels are averaged below so that mono = mean of channels
    # whatever FFmpeg's downmix matrix would do.
    resampler = av.AudioResampler(format="fltp", layout=None, rate=rate)
    chunks: list[np.ndarray] = []
    first_time = None
    decoded_seconds = 0.0
    for frame in (frame for packet in container.demux(stream) for frame in packet.decode()):
        if first_time is None:
            if frame.pts is None:
                continue  # cannot place this frame in time
            first_time = float(frame.pts * frame.time_base)
        chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
        # Samples are placed by count from the first frame, so the count (not later timestamps) says when to stop.
        decoded_seconds += frame.samples / frame.sample_rate
        if first_time + decoded_seconds >= end_time:
            break
    chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return first_time, samples
