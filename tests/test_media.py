"""Decoding tests: decoded frames and audio are checked against what the fixtures encoded and against a plain
sequential decode of the whole file (no seeking), on several codecs, containers, frame rates and damaged files."""
from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.signal
import torch

from mmv.data import media
from mmv.data.media import (MediaError, decode_audio, decode_clip, evenly_spaced_starts, probe, random_start,
                            sliding_starts)

VIDEO_KEYS = ["lossless_mp4", "x264_2997_mkv", "vp9_webm", "mpeg4_avi", "odd_size_no_audio_mp4", "vfr_mkv", "vfr_mp4",
              "late_video_mkv"]
AUDIO_KEYS = ["lossless_mp4", "x264_2997_mkv", "vp9_webm", "mpeg4_avi", "late_video_mkv"]
# Audio placement resolution: MP4/AVI timestamps are exact to the sample; Matroska/WebM store milliseconds, and
# Opus' codec delay is rounded to a millisecond once more, so 1 ms (48 samples at 48 kHz).
MAX_LAG = {"lossless_mp4": 1, "mpeg4_avi": 1, "x264_2997_mkv": 48, "vp9_webm": 48, "late_video_mkv": 48}
# Relative RMS error of the decoded span against the encoded chirp, once aligned: the codec's own error (AAC and
# Opus at 256 kb/s), or for PCM the sub-sample phase of resampling 44.1 / 22.05 kHz to 48 kHz.
MAX_REL_RMS = {"lossless_mp4": 0.02, "mpeg4_avi": 0.05, "x264_2997_mkv": 0.05, "vp9_webm": 0.05,
               "late_video_mkv": 0.02}


@functools.lru_cache(maxsize=None)
def sequential_decode(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference: every frame of the file in order, no seeking: (times [N], frames [N, H, W, 3])."""
    with av.open(path) as container:
        decoded = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    return np.array([t for t, _ in decoded]), np.stack([f for _, f in decoded])


def displayed_index(times: np.ndarray, t: float, tol: float = 1e-3) -> int:
    """Brute force: the last frame shown at or before t (the first frame before any)."""
    shown = np.nonzero(times <= t + tol)[0]
    return int(shown[-1]) if len(shown) else 0


def test_probe_reports_what_was_written(media_files):
    for key in VIDEO_KEYS + ["audio_only_m4a"]:
        spec = media_files[key]
        info = probe(spec.path)
        assert info.has_video == (key != "audio_only_m4a"), key
        assert info.has_audio == (spec.audio_rate is not None), key
        if info.has_video:
            assert (info.width, info.height) == (spec.width, spec.height), key
            if not key.startswith("vfr"):
                assert info.fps == pytest.approx(spec.fps, rel=1e-3), key
        if info.has_audio:
            assert (info.audio_sample_rate, info.num_audio_channels) == (spec.audio_rate, spec.audio_channels), key
        expected = max(spec.duration, spec.audio_duration or 0.0)
        assert info.duration == pytest.approx(expected, abs=0.03), key


@pytest.mark.parametrize("key", VIDEO_KEYS)
def test_stored_timestamps_are_the_encoded_ones(media_files, synthetic_media, key):
    spec = media_files[key]
    times, frames = sequential_decode(str(spec.path))
    assert len(times) == len(spec.frame_times)
    np.testing.assert_allclose(times, spec.frame_times, atol=1e-3)  # Matroska/WebM round to 1 ms
    assert [synthetic_media.frame_index(f) for f in frames] == list(range(len(frames)))


@pytest.mark.parametrize("key", VIDEO_KEYS)
@pytest.mark.parametrize("clip_fps", [10.0, "native", 7.3])
def test_frames_are_the_ones_displayed(media_files, synthetic_media, key, clip_fps):
    spec = media_files[key]
    fps = spec.fps if clip_fps == "native" else clip_fps
    times, reference = sequential_decode(str(spec.path))
    duration = probe(spec.path).duration
    rng = np.random.default_rng(len(key))
    starts = [0.0, 0.37, duration / 2, duration - 0.3] + list(rng.uniform(0, duration - 0.05, 4))
    for start in starts:
        clip = decode_clip(spec.path, float(start), 6, fps, with_audio=False)
        expected = [displayed_index(times, start + i / fps) for i in range(6)]
        assert clip.frames.shape == (6, spec.height, spec.width, 3) and clip.frames.dtype == np.uint8
        # The content says which frame it is: exactly the frames a full decode shows at those instants.
        assert [synthetic_media.frame_index(f) for f in clip.frames] == expected, (key, start, fps)
        np.testing.assert_array_equal(clip.frames, reference[expected])
        # And the pixels are the encoded ones, within the codec's tolerance.
        encoded = np.stack([synthetic_media.frame_image(i, spec.height, spec.width) for i in expected])
        error = np.abs(clip.frames.astype(int) - encoded)
        if spec.tolerance <= 3:
            assert error.max() <= spec.tolerance, (key, error.max())
        else:
            assert error.mean() < 8, (key, error.mean())  # MPEG-4 in 4:2:0: blurred red stripe edges
        assert clip.start == start and clip.end == pytest.approx(start + 6 / fps)


def test_seek_decodes_only_around_the_clip(media_files, synthetic_media):
    spec = media_files["lossless_mp4"]  # 75 frames, keyframe every 10
    with av.open(str(spec.path)) as container:
        stream = container.streams.video[0]
        targets = [2.0 + i / 25 for i in range(4)]
        selector = media._select_frames(container, stream, targets, None, targets[0])
    assert [synthetic_media.frame_index(f) for f in selector.selected] == [50, 51, 52, 53]
    # From the keyframe at frame 50 to one frame past the clip, plus the decoder's B-frame look-ahead: far from the
    # 54 frames a decode from the start needs.
    assert selector.num_decoded <= 10


def test_short_side_resize_while_decoding(media_files, synthetic_media):
    spec = media_files["odd_size_no_audio_mp4"]  # 97x61
    clip = decode_clip(spec.path, 0.5, 4, 12.5, short_side=40)
    assert clip.frames.shape == (4, 40, 97 * 40 // 61, 3)
    assert [synthetic_media.frame_index(f) for f in clip.frames] == [6, 7, 8, 9]
    # Independent resize of the full-size frames (torch, antialiased bilinear): same picture within rounding.
    full = torch.from_numpy(decode_clip(spec.path, 0.5, 4, 12.5).frames).permute(0, 3, 1, 2).float()
    resized = torch.nn.functional.interpolate(full, size=(40, 63), mode="bilinear", antialias=True)
    error = (torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() - resized).abs()
    assert error.mean() < 4.0


@pytest.mark.parametrize("key", AUDIO_KEYS)
def test_audio_span_matches_video_span(media_files, synthetic_media, key):
    spec = media_files[key]
    times, _ = sequential_decode(str(spec.path))
    for start in [0.0, 0.3, 0.777, 1.55, spec.duration - 1.0]:
        clip = decode_clip(spec.path, start, 8, 10.0, audio_rate=48000)
        assert synthetic_media.frame_index(clip.frames[0]) == displayed_index(times, start)
        assert_follows_signal(clip.audio, start, spec, key, synthetic_media)


def assert_follows_signal(audio: np.ndarray, start: float, spec, key: str, synthetic_media) -> None:
    """0.8 s of 48 kHz audio decoded from ``start`` is the encoded chirp, placed within the file's tolerance."""
    assert audio.dtype == np.float32 and audio.shape == (38400,)
    t = start + np.arange(len(audio)) / 48000
    valid = t < spec.audio_duration - 0.005
    expected = synthetic_media.audio_signal(t) * valid  # the chirp: the mean of both channels
    # Cross-correlation over lags of +-200 samples: the lag that best aligns the decoded span with the chirp.
    scores = scipy.signal.correlate(audio, expected[200:-200], mode="valid", method="fft")
    lag = int(np.argmax(scores)) - 200
    assert abs(lag) <= MAX_LAG[key], (key, start, lag)
    aligned = np.roll(audio, -lag)[valid][200:-200]
    rel_rms = np.sqrt(np.mean((aligned - expected[valid][200:-200]) ** 2) / np.mean(expected[valid] ** 2))
    assert rel_rms < MAX_REL_RMS[key], (key, start, rel_rms)


def test_audio_past_the_end_is_zero_padded(media_files, synthetic_media):
    spec = media_files["x264_2997_mkv"]  # PCM: nothing rings past the end
    start = spec.audio_duration - 0.2
    clip = decode_clip(spec.path, start, 5, 10.0)
    end_index = round((spec.audio_duration - start) * 48000)
    assert len(clip.audio) == 24000
    assert np.all(clip.audio[end_index + 48:] == 0)
    assert np.abs(clip.audio[: end_index - 48]).max() > 0.3
    # Frames past the end repeat the last frame.
    assert [synthetic_media.frame_index(f) for f in clip.frames][-2:] == [len(spec.frame_times) - 1] * 2


@pytest.mark.parametrize("num_frames, fps, rate", [(7, 12.5, 16000), (7, 30000 / 1001, 16000), (32, 10.0, 48000),
                                                    (3, 7.3, 44100)])
def test_audio_length_is_exact(media_files, num_frames, fps, rate):
    clip = decode_clip(media_files["lossless_mp4"].path, 0.4, num_frames, fps, audio_rate=rate)
    assert clip.audio.shape == (round(num_frames / fps * rate),)
    assert np.abs(clip.audio).max() <= 1.0


@pytest.mark.parametrize("key", AUDIO_KEYS)
def test_decode_audio_follows_the_encoded_signal(media_files, synthetic_media, key):
    """decode_audio(path, start, end) places the span in the file's timeline as decode_clip does (same bounds)."""
    spec = media_files[key]
    for start in [0.0, 0.3, 1.1, spec.duration - 1.0]:
        audio = decode_audio(spec.path, start, start + 0.8, sample_rate=48000)
        assert_follows_signal(audio, start, spec, key, synthetic_media)


def test_decode_audio_whole_files_audio_only_and_past_the_end(media_files):
    spec = media_files["x264_2997_mkv"]  # PCM: nothing rings past the end
    whole = decode_audio(spec.path, sample_rate=16000)
    assert abs(len(whole) - round(spec.duration * 16000)) <= 1
    only = media_files["audio_only_m4a"]
    sound = decode_audio(only.path, 0.5, 1.5, sample_rate=48000)
    assert sound.shape == (48000,) and np.abs(sound).max() > 0.3
    # Past the end of the sound: zeros, the requested length.
    tail = decode_audio(spec.path, spec.audio_duration - 0.1, spec.audio_duration + 0.4, sample_rate=16000)
    assert tail.shape == (8000,) and np.all(tail[1600 + 48:] == 0)


@pytest.mark.parametrize("key, reason", [("odd_size_no_audio_mp4", "no_audio"), ("empty_mp4", "empty"),
                                         ("text_mp4", "not_media")])
def test_decode_audio_errors_name_the_problem(media_files, key, reason):
    path = getattr(media_files[key], "path", media_files[key])
    with pytest.raises(MediaError) as info:
        decode_audio(path)
    assert info.value.reason == reason and Path(path).name in str(info.value)
    with pytest.raises(MediaError, match="too_short"):
        decode_audio(media_files["lossless_mp4"].path, 10.0)


def test_missing_audio_is_none(media_files):
    clip = decode_clip(media_files["odd_size_no_audio_mp4"].path, 0.0, 4, 10.0)
    assert clip.audio is None and not clip.has_audio
    clip = decode_clip(media_files["lossless_mp4"].path, 0.0, 4, 10.0, with_audio=False)
    assert clip.audio is None and clip.has_audio


@pytest.mark.parametrize("key, reason", [("empty_mp4", "empty"), ("text_mp4", "not_media"),
                                         ("truncated_mp4", "truncated"), ("audio_only_m4a", "no_video")])
def test_unusable_files_raise_media_error_with_reason(media_files, key, reason):
    path = getattr(media_files[key], "path", media_files[key])
    with pytest.raises(MediaError) as info:
        decode_clip(path, 0.0, 4, 10.0)
    assert info.value.reason == reason
    assert info.value.path == str(path) and str(path) in str(info.value)
    if reason != "no_video":
        with pytest.raises(MediaError, match=reason):
            probe(path)


def test_cover_art_is_not_video(media_files):
    info = probe(media_files["cover_art_m4a"])
    assert info.has_audio and not info.has_video
    with pytest.raises(MediaError) as error:
        decode_clip(media_files["cover_art_m4a"], 0.0, 2, 10.0)
    assert error.value.reason == "no_video"


def test_clip_before_the_first_frame_shows_the_first_frame(media_files, synthetic_media):
    spec = media_files["late_video_mkv"]  # frames from 0.5 s every 40 ms, audio from 0
    clip = decode_clip(spec.path, 0.3, 6, 10.0)
    assert [synthetic_media.frame_index(f) for f in clip.frames] == [0, 0, 0, 2, 5, 7]
    assert np.abs(clip.audio[:4800]).max() > 0.3  # the audio before the first frame is there


def test_missing_file(tmp_path):
    with pytest.raises(MediaError) as info:
        probe(tmp_path / "absent.mp4")
    assert info.value.reason == "missing"


def test_truncated_matroska_decodes_what_remains(media_files, synthetic_media):
    path = media_files["truncated_mkv"]  # the first 40% of a 4 s file whose header claims 4 s
    clip = decode_clip(path, 0.4, 4, 10.0)
    assert [synthetic_media.frame_index(f) for f in clip.frames] == [10, 12, 15, 17]
    with pytest.raises(MediaError) as info:
        decode_clip(path, 3.0, 4, 10.0)
    assert info.value.reason == "truncated"


def test_clip_start_out_of_range(media_files):
    path = media_files["lossless_mp4"].path
    with pytest.raises(MediaError) as info:
        decode_clip(path, 3.0, 4, 10.0)
    assert info.value.reason == "too_short"
    with pytest.raises(ValueError):
        decode_clip(path, -0.1, 4, 10.0)
    with pytest.raises(ValueError):
        decode_clip(path, 0.0, 0, 10.0)


def test_media_error_survives_pickling():
    err = pickle.loads(pickle.dumps(MediaError("/data/x.mp4", "truncated", "moov atom not found")))
    assert (err.path, err.reason, err.detail) == ("/data/x.mp4", "truncated", "moov atom not found")
    assert str(err) == "/data/x.mp4: moov atom not found [truncated]"


def test_threaded_decoding_gives_the_same_frames(media_files):
    path = media_files["lossless_mp4"].path
    one = decode_clip(path, 1.3, 8, 10.0, threads=1)
    many = decode_clip(path, 1.3, 8, 10.0, threads=0)
    np.testing.assert_array_equal(one.frames, many.frames)
    np.testing.assert_array_equal(one.audio, many.audio)


def test_evenly_spaced_starts():
    np.testing.assert_allclose(evenly_spaced_starts(10.0, 3.2, 5), np.linspace(0, 6.8, 5))
    assert evenly_spaced_starts(10.0, 3.2, 1) == [pytest.approx(3.4)]
    assert evenly_spaced_starts(2.0, 3.2, 3) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        evenly_spaced_starts(10.0, 3.2, 0)


def test_sliding_starts():
    assert sliding_starts(10.0, 3.2, 1.0) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert sliding_starts(6.4, 3.2, 3.2) == [0.0, 3.2]  # the last clip ends exactly at the end
    assert sliding_starts(0.9 + 0.1 + 3.2, 3.2, 0.1)[-1] == pytest.approx(1.0)  # float noise does not drop a start
    assert sliding_starts(2.0, 3.2, 1.0) == [0.0]
    for start in sliding_starts(17.3, 3.2, 0.7):
        assert start + 3.2 <= 17.3 + 1e-9


def test_random_start_is_seeded_and_in_range():
    draws = [random_start(10.0, 3.2, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    generator = torch.Generator().manual_seed(0)
    starts = [random_start(10.0, 3.2, generator) for _ in range(200)]
    assert min(starts) >= 0.0 and max(starts) <= 6.8 and np.std(starts) > 1.5
    assert random_start(2.0, 3.2, generator) == 0.0


class _ClipDataset(torch.utils.data.Dataset):
    def __init__(self, path, starts):
        self.path, self.starts = path, starts

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        clip = decode_clip(self.path, self.starts[i], 8, 10.0)
        return torch.from_numpy(clip.frames), torch.from_numpy(clip.audio)


def test_decoding_in_dataloader_workers(media_files):
    path = media_files["lossless_mp4"].path
    starts = [0.1 * i for i in range(24)]
    decode_clip(path, 1.0, 8, 10.0, threads=0)  # FFmpeg threads in the parent before forking
    expected = [_ClipDataset(path, starts)[i] for i in range(len(starts))]
    # A timeout turns a hang into a failure.
    loader = torch.utils.data.DataLoader(_ClipDataset(path, starts), batch_size=4, num_workers=2, timeout=60)
    batches = list(loader)
    frames = torch.cat([b[0] for b in batches])
    audio = torch.cat([b[1] for b in batches])
    torch.testing.assert_close(frames, torch.stack([e[0] for e in expected]), rtol=0, atol=0)
    torch.testing.assert_close(audio, torch.stack([e[1] for e in expected]), rtol=0, atol=0)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set size from /proc")
def test_memory_does_not_grow_over_many_clips(media_files):
    path = media_files["x264_2997_mkv"].path
    for i in range(30):  # warm up allocator pools and caches
        decode_clip(path, (i * 0.13) % 2.5, 4, 10.0)
    before = _rss_bytes()
    for i in range(200):
        decode_clip(path, (i * 0.07) % 2.5, 4, 10.0)
    growth = _rss_bytes() - before
    # Each clip allocates ~0.5 MiB (frames, audio, packets); a leak of any of them would add ~100 MiB.
    assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 200 clips"


def test_ctrl_c_inside_ffmpeg_is_not_a_bad_file(media_files, monkeypatch):
    """PyAV stops FFmpeg with ExitError when Ctrl-C arrives during I/O: that must end the run, not skip the file."""
    exit_error = av.error.ExitError(-1414092869, "Immediate exit requested")
    path = media_files["lossless_mp4"].path

    def interrupted(*args, **kwargs):
        raise exit_error

    monkeypatch.setattr(av, "open", interrupted)
    for call in (lambda: probe(path), lambda: decode_clip(path, 0.0, 2, 10.0), lambda: decode_audio(path)):
        with pytest.raises(KeyboardInterrupt):
            call()
    monkeypatch.undo()
    container = av.open(str(path))
    monkeypatch.setattr(type(container), "demux", lambda *args, **kwargs: (_ for _ in ()).throw(exit_error))
    container.close()
    with pytest.raises(KeyboardInterrupt):
        decode_clip(path, 0.5, 2, 10.0)


@pytest.mark.parametrize("key", ["lossless_mp4", "x264_2997_mkv", "vfr_mp4"])
def test_decode_clips_equals_one_decode_clip_per_start(media_files, key):
    """Several clips in as few decoder passes as possible give exactly the frames of one decode_clip each: near
    clips (one pass), overlapping ones, clips far apart (a seek) and starts in any order."""
    spec = media_files[key]
    last = spec.duration - 0.5
    starts = [0.0, 0.4, 0.3, last, 0.8, last - 0.05, 1.0]
    together = media.decode_clips(spec.path, starts, 4, 10.0, max_short_side=40)
    assert len(together) == len(starts)
    for start, frames in zip(starts, together):
        alone = decode_clip(spec.path, start, 4, 10.0, with_audio=False, max_short_side=40).frames
        np.testing.assert_array_equal(frames, alone, err_msg=f"{key} at {start}")
    assert media.decode_clips(spec.path, [], 4, 10.0) == []


def test_decode_clips_decodes_consecutive_segments_in_one_pass(media_files, monkeypatch):
    """Consecutive segments of a file share one seek instead of one seek each."""
    spec = media_files["lossless_mp4"]
    seeks = []
    original = media._select_frames

    def counting(container, stream, targets, *args, **kwargs):
        seeks.append(targets[0])
        return original(container, stream, targets, *args, **kwargs)

    monkeypatch.setattr(media, "_select_frames", counting)
    media.decode_clips(spec.path, [0.0, 0.4, 0.8, 1.2], 4, 10.0)
    assert len(seeks) == 1
    seeks.clear()
    media.decode_clips(spec.path, [0.0, 0.4], 4, 10.0)
    media.decode_clips(spec.path, [0.0], 4, 10.0)
    assert len(seeks) == 2
