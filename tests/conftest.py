"""Shared fixtures: small media files written with PyAV whose content says where they are in time.

Every video frame shows its own index as a binary code (vertical stripes in the red channel, bit b set = stripe b
bright), over green and blue ramps, so a test can read which frame it got and compare pixels with what was encoded.
Every audio track is a chirp (frequency rising with time) on both channels plus a tone of opposite sign on each, so
the channel mean is exactly the chirp and its phase says where a span starts.

Use ``media_files`` (a dict of ready-made files, written once per session) or ``synthetic_media`` (the helpers, to
write your own, e.g. ``synthetic_media.write_video(path, codec="libx264", fps=10, num_frames=30)``).
"""
from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

INDEX_BITS = 10  # frames 0..1023 can be identified


def frame_image(index: int, height: int, width: int) -> np.ndarray:
    """The ``[H, W, 3]`` uint8 RGB image of frame ``index``."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    columns = np.arange(width)
    bit_of_column = columns * INDEX_BITS // width
    image[..., 0] = np.where((index >> bit_of_column) & 1, 230, 25)[None, :]
    image[..., 1] = (columns * 200 // max(width - 1, 1))[None, :] + 20
    image[..., 2] = (np.arange(height) * 200 // max(height - 1, 1))[:, None] + 20
    return image


def frame_index(image: np.ndarray) -> int:
    """Reads the index back from a decoded (possibly lossy, possibly resized) ``[H, W, 3]`` image."""
    width = image.shape[1]
    index = 0
    for bit in range(INDEX_BITS):
        lo, hi = bit * width / INDEX_BITS, (bit + 1) * width / INDEX_BITS
        # The middle half of each stripe, away from edges blurred by chroma subsampling or resizing.
        begin, end = int(lo + (hi - lo) / 4), max(int(lo + (hi - lo) / 4) + 1, int(hi - (hi - lo) / 4))
        if image[:, begin:end, 0].astype(np.float64).mean() > 127:
            index |= 1 << bit
    return index


CHIRP_F0, CHIRP_RATE, SIDE_TONE = 220.0, 300.0, 2500.0


def audio_signal(t: np.ndarray) -> np.ndarray:
    """The mono reference (mean of the two channels) at times ``t`` (seconds): a chirp, frequency 220 + 300 t Hz."""
    return 0.5 * np.sin(2 * np.pi * (CHIRP_F0 * t + CHIRP_RATE / 2 * t * t))


def _side_tone(t: np.ndarray) -> np.ndarray:
    return 0.2 * np.sin(2 * np.pi * SIDE_TONE * t)


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """What a fixture file holds, for the tests to compare with."""

    path: Path
    frame_times: tuple[float, ...]  # presentation time of frame i (seconds)
    width: int
    height: int
    fps: float
    audio_rate: int | None
    audio_channels: int | None
    audio_duration: float | None
    lossless: bool  # RGB-exact (libx264rgb crf 0)
    tolerance: int  # max abs pixel error expected for frames of this codec

    @property
    def duration(self) -> float:
        return self.frame_times[-1] + 1.0 / self.fps if self.frame_times else 0.0

    def frame_at(self, t: float, tol: float = 1e-3) -> int:
        """Brute force: the index of the last frame whose time is <= t (the first frame before any)."""
        times = np.asarray(self.frame_times)
        candidates = np.nonzero(times <= t + tol)[0]
        return int(candidates[-1]) if len(candidates) else 0


def write_video(
    path: str | os.PathLike,
    *,
    codec: str = "libx264rgb",
    fps: float = 25.0,
    num_frames: int = 50,
    width: int = 64,
    height: int = 48,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
    gop: int | None = None,
    frame_times_ms: list[int] | None = None,
    audio_codec: str | None = "aac",
    audio_rate: int = 48000,
    audio_channels: int = 2,
    audio_duration: float | None = None,
    container_format: str | None = None,
    index_offset: int = 0,
) -> VideoSpec:
    """Writes a test video with PyAV and returns what it holds.

    Args:
        path: Output file; the extension picks the container unless ``container_format`` is given.
        codec: Video encoder, or None for an audio-only file.
        fps: Nominal frame rate.
        num_frames: Number of frames.
        width: Frame width.
        height: Frame height.
        pix_fmt: Encoder pixel format (default: rgb24 for libx264rgb, yuv444p for libx264/vp9, yuv420p otherwise).
        options: Encoder options (default: lossless settings for the x264/vp9 encoders).
        gop: Keyframe interval in frames.
        frame_times_ms: Explicit presentation times in milliseconds (variable frame rate).
        audio_codec: Audio encoder, or None for no audio track.
        audio_rate: Audio sample rate.
        audio_channels: 1 or 2.
        audio_duration: Seconds of audio (default: the video's duration).
        container_format: FFmpeg format name, when the extension is not enough.
        index_offset: Added to the index drawn in each frame.
    """
    import av

    container = av.open(os.fspath(path), mode="w", format=container_format)
    video_stream = audio_stream = None
    if codec is not None:
        video_stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
        video_stream.width, video_stream.height = width, height
        video_stream.pix_fmt = pix_fmt or _default_pix_fmt(codec)
        video_stream.options = options if options is not None else _lossless_options(codec)
        if gop is not None:
            video_stream.codec_context.gop_size = gop
        if frame_times_ms is not None:
            video_stream.codec_context.time_base = Fraction(1, 1000)
            video_stream.time_base = Fraction(1, 1000)
    if audio_codec is not None:
        audio_stream = container.add_stream(audio_codec, rate=audio_rate)
        audio_stream.layout = "stereo" if audio_channels == 2 else "mono"
        if audio_codec in ("aac", "libopus", "libmp3lame"):
            audio_stream.bit_rate = 256000  # high enough that codec error does not hide timing errors
    frame_times = []
    if video_stream is not None:
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i + index_offset, height, width), format="rgb24")
            if frame_times_ms is not None:
                frame.pts, frame.time_base = frame_times_ms[i], Fraction(1, 1000)
                frame_times.append(frame_times_ms[i] / 1000)
            else:
                frame_times.append(i / fps)
            for packet in video_stream.encode(frame):
                container.mux(packet)
        for packet in video_stream.encode():
            container.mux(packet)
    if audio_stream is not None:
        if audio_duration is None:
            audio_duration = frame_times[-1] + 1.0 / fps if frame_times else 2.0
        _encode_audio(container, audio_stream, audio_rate, audio_channels, audio_duration)
    container.close()
    exact = codec == "libx264rgb"
    return VideoSpec(
        path=Path(path), frame_times=tuple(frame_times), width=width, height=height, fps=fps,
        audio_rate=audio_rate if audio_codec else None, audio_channels=audio_channels if audio_codec else None,
        audio_duration=audio_duration if audio_codec else None, lossless=exact,
        tolerance=0 if exact else (3 if _is_lossless_yuv(codec, options) else 60),
    )


def _default_pix_fmt(codec: str) -> str:
    return {"libx264rgb": "rgb24", "libx264": "yuv444p", "libvpx-vp9": "yuv444p"}.get(codec, "yuv420p")


def _lossless_options(codec: str) -> dict[str, str]:
    return {"libx264rgb": {"crf": "0"}, "libx264": {"qp": "0"}, "libvpx-vp9": {"lossless": "1"},
            "mpeg4": {"qmax": "2"}}.get(codec, {})


def _is_lossless_yuv(codec: str, options: dict[str, str] | None) -> bool:
    return codec in ("libx264", "libvpx-vp9") and options is None


def _encode_audio(container, stream, rate: int, channels: int, duration: float) -> None:
    import av

    total = round(duration * rate)
    t = np.arange(total) / rate
    mono = audio_signal(t)
    planes = [mono + _side_tone(t), mono - _side_tone(t)] if channels == 2 else [mono]
    signal = np.stack(planes).astype(np.float32)
    chunk = stream.codec_context.frame_size or 1024
    for begin in range(0, total, chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(signal[:, begin:begin + chunk]), format="fltp",
                                           layout=stream.layout.name)
        frame.sample_rate, frame.pts = rate, begin
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_audio_only(path: str | os.PathLike, *, codec: str = "aac", rate: int = 48000, duration: float = 2.0,
                     container_format: str | None = None) -> VideoSpec:
    """Writes a file with only an audio track."""
    return write_video(path, codec=None, audio_codec=codec, audio_rate=rate, audio_duration=duration,
                       container_format=container_format)


def write_audio_with_cover_art(path: str | os.PathLike, *, duration: float = 1.0) -> Path:
    """Writes an AAC file in MP4 whose cover art is a PNG 'video' stream marked as an attached picture."""
    import av

    container = av.open(os.fspath(path), mode="w", format="mp4")
    audio = container.add_stream("aac", rate=48000)
    audio.layout = "mono"
    cover = container.add_stream("png", rate=1)
    cover.width, cover.height, cover.pix_fmt = 16, 16, "rgb24"
    cover.disposition = av.stream.Disposition.attached_pic
    for packet in cover.encode(av.VideoFrame.from_ndarray(frame_image(5, 16, 16), format="rgb24")):
        container.mux(packet)
    for packet in cover.encode():
        container.mux(packet)
    _encode_audio(container, audio, 48000, 1, duration)
    container.close()
    return Path(path)


class SyntheticMedia:
    """The helpers, as a fixture for tests that write their own files."""

    frame_image = staticmethod(frame_image)
    frame_index = staticmethod(frame_index)
    audio_signal = staticmethod(audio_signal)
    write_video = staticmethod(write_video)
    write_audio_only = staticmethod(write_audio_only)


@pytest.fixture(scope="session")
def synthetic_media() -> type[SyntheticMedia]:
    return SyntheticMedia


VFR_TIMES_MS = [0, 40, 75, 200, 210, 260, 400, 420, 500, 800, 833, 900, 1000, 1150, 1160, 1300, 1500, 1530, 1600,
                1750, 1900, 1950, 2000]


def encoder_available(name: str) -> bool:
    """Whether this FFmpeg build can encode with ``name``."""
    import av

    try:
        av.codec.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):  # PyAV raises UnknownCodecError (a ValueError) for missing codecs
        return False
    return True


class _MediaFiles(dict):
    """The fixture files; a test that asks for one whose encoder this FFmpeg build lacks is skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.unavailable: dict[str, str] = {}

    def require(self, key: str, *encoders: str) -> bool:
        missing = [name for name in encoders if not encoder_available(name)]
        if missing:
            self.unavailable[key] = ", ".join(missing)
        return not missing

    def __missing__(self, key: str):
        if key in self.unavailable:
            pytest.skip(f"{key}: this FFmpeg build has no {self.unavailable[key]} encoder")
        raise KeyError(key)


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VideoSpec | Path]:
    """A set of small files covering codecs, containers, frame rates, sizes and damage.

    Keys give a ``VideoSpec``: ``lossless_mp4`` (libx264rgb crf 0, 25 fps, AAC 48 kHz stereo, keyframe every 10),
    ``x264_2997_mkv`` (libx264 yuv444p qp 0, 29.97 fps, PCM 44.1 kHz stereo), ``vp9_webm`` (VP9 lossless, 12.5 fps,
    Opus), ``mpeg4_avi`` (MPEG-4 part 2, 30 fps, PCM 22.05 kHz mono), ``odd_size_no_audio_mp4`` (97x61, 12.5 fps, no
    audio), ``vfr_mkv`` and ``vfr_mp4`` (variable frame rate, no audio), ``late_video_mkv`` (video from 0.5 s, AAC
    from 0), ``audio_only_m4a``. Keys give a ``Path``: ``cover_art_m4a`` (AAC with a PNG attached picture),
    ``empty_mp4`` (0 bytes), ``text_mp4`` (a text file), ``truncated_mp4`` (first half of an mp4 whose index is at the
    end), ``truncated_mkv`` (first 40% of a 4 s Matroska file; a ``VideoSpec`` of the intact file is
    ``truncated_mkv_source``). Files whose encoder this FFmpeg build lacks are left out, and asking for one skips
    the test.
    """
    root = tmp_path_factory.mktemp("media")
    files = _MediaFiles()
    files["lossless_mp4"] = write_video(root / "lossless.mp4", codec="libx264rgb", fps=25, num_frames=75, gop=10)
    files["x264_2997_mkv"] = write_video(root / "x264_2997.mkv", codec="libx264", fps=30000 / 1001, num_frames=90,
                                         gop=15, audio_codec="pcm_s16le", audio_rate=44100)
    if files.require("vp9_webm", "libvpx-vp9", "libopus"):
        files["vp9_webm"] = write_video(root / "vp9.webm", codec="libvpx-vp9", fps=12.5, num_frames=30, gop=8,
                                        audio_codec="libopus", audio_rate=48000)
    if files.require("mpeg4_avi", "mpeg4"):
        files["mpeg4_avi"] = write_video(root / "mpeg4.avi", codec="mpeg4", fps=30, num_frames=60, gop=12,
                                         audio_codec="pcm_s16le", audio_rate=22050, audio_channels=1)
    files["odd_size_no_audio_mp4"] = write_video(root / "odd.mp4", codec="libx264", fps=12.5, num_frames=25,
                                                 width=97, height=61, audio_codec=None)
    files["vfr_mkv"] = write_video(root / "vfr.mkv", frame_times_ms=VFR_TIMES_MS, num_frames=len(VFR_TIMES_MS),
                                   fps=25, gop=5, audio_codec=None)
    files["vfr_mp4"] = write_video(root / "vfr.mp4", frame_times_ms=VFR_TIMES_MS, num_frames=len(VFR_TIMES_MS),
                                   fps=25, gop=5, audio_codec=None)
    files["audio_only_m4a"] = write_audio_only(root / "audio_only.m4a", duration=2.0)
    files["cover_art_m4a"] = write_audio_with_cover_art(root / "cover_art.m4a")
    files["late_video_mkv"] = write_video(root / "late_video.mkv", frame_times_ms=[500 + 40 * i for i in range(40)],
                                          num_frames=40, fps=25, gop=10, audio_duration=2.5)
    (root / "empty.mp4").write_bytes(b"")
    files["empty_mp4"] = root / "empty.mp4"
    (root / "text.mp4").write_text("This is not a video.\n" * 20)
    files["text_mp4"] = root / "text.mp4"
    whole = files["lossless_mp4"].path.read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    files["truncated_mp4"] = root / "truncated.mp4"
    source = write_video(root / "long.mkv", codec="libx264rgb", fps=25, num_frames=100, gop=10)
    files["truncated_mkv_source"] = source
    data = source.path.read_bytes()
    (root / "truncated.mkv").write_bytes(data[: int(len(data) * 0.4)])
    files["truncated_mkv"] = root / "truncated.mkv"
    return files


@pytest.fixture(scope="module")
def two_torch_threads():
    """Two torch threads for a module's tests, and the previous count back afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
