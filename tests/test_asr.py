"""Speech recognition: PocketSphinx on speech synthesized by espeak-ng, audio loading, `mmv transcribe`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
import wave
from fractions import Fraction

import numpy as np
import pytest

from mmv.data.asr import (
    ASRError,
    WhisperBackend,
    _split_long_region,
    get_backend,
    group_words,
    list_backends,
)
from mmv.data.media import MediaError, decode_audio
from mmv.data.narrations import Narration, read_narrations

SENTENCE = "one two three four five six seven eight nine ten"
LEAD_SILENCE = 1.0  # seconds of silence put before the speech, so that times have something to be checked against

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng) to synthesize speech")


@pytest.fixture(scope="module")
def pocketsphinx_backend():
    pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (optional extra 'asr')")
    return get_backend("pocketsphinx")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    """espeak-ng saying SENTENCE, as float32 mono at espeak's rate (22050 Hz), with silence before and after."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng) to synthesize speech")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    # NOTE: the en-us+f2 voice is the espeak-ng voice PocketSphinx's US English model recognises best.
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-w", str(path), SENTENCE], check=True, capture_output=True)
    with wave.open(str(path)) as f:
        rate, pcm = f.getframerate(), f.readframes(f.getnframes())
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return np.concatenate([np.zeros(int(LEAD_SILENCE * rate), np.float32), samples,
                           np.zeros(rate // 2, np.float32)]), rate


def _speech_extent(waveform: np.ndarray, rate: int) -> tuple[float, float]:
    """First and last time (seconds) where the waveform is audible."""
    loud = np.nonzero(np.abs(waveform) > 0.02)[0]
    return loud[0] / rate, loud[-1] / rate


def _recall(narrations: list[Narration]) -> float:
    words = " ".join(n.text for n in narrations).split()
    return sum(word in words for word in SENTENCE.split()) / len(SENTENCE.split())


def _check_times(narrations: list[Narration], waveform: np.ndarray, rate: int) -> None:
    on, off = _speech_extent(waveform, rate)
    assert on > LEAD_SILENCE - 0.05
    for narration in narrations:
        assert on - 0.35 <= narration.start <= narration.end <= off + 0.35, (narration, on, off)
    assert narrations == sorted(narrations, key=lambda n: n.start)


# ----------------------------------------------------------------------------------------------------- backends


@needs_espeak
@pytest.mark.slow
def test_pocketsphinx_recognizes_synthesized_speech(pocketsphinx_backend, speech):
    waveform, rate = speech  # 22050 Hz: the backend resamples to 16 kHz
    narrations = pocketsphinx_backend.transcribe(waveform, rate)
    # Measured: 8 of the ten words (10 with maxhmmpf=30000); the bound leaves room for other versions of both.
    assert _recall(narrations) >= 0.6, narrations
    _check_times(narrations, waveform, rate)
    assert all(n.end - n.start <= pocketsphinx_backend.max_line_seconds + 1e-6 for n in narrations)


def test_pocketsphinx_silence_gives_nothing(pocketsphinx_backend):
    assert pocketsphinx_backend.transcribe(np.zeros(32000, np.float32), 16000) == []
    assert pocketsphinx_backend.transcribe(np.zeros(0, np.float32), 16000) == []
    with pytest.raises(ValueError, match="mono"):
        pocketsphinx_backend.transcribe(np.zeros((2, 100), np.float32), 16000)


def test_group_words_breaks_at_pauses_and_length():
    words = [("a", 0.0, 0.5), ("b", 0.6, 1.0), ("c", 2.5, 3.0), ("d", 3.1, 5.0), ("e", 5.1, 6.0), ("f", 6.0, 12.0)]
    assert group_words(words, max_line_seconds=4.0, max_pause=0.8) == [
        Narration(0.0, 1.0, "a b"), Narration(2.5, 6.0, "c d e"), Narration(6.0, 12.0, "f")]
    assert group_words(words, 4.0, 0.8, duration=10.0)[-1] == Narration(6.0, 10.0, "f")
    assert group_words([], 4.0, 0.8) == []


def test_long_regions_are_cut_in_pauses():
    rng = np.random.default_rng(0)
    pcm = (rng.normal(size=16000 * 12) * 3000).astype(np.int16)
    pcm[16000 * 7:16000 * 7 + 800] = 0  # a 50 ms pause at 7 s
    pieces = _split_long_region(pcm, 16000, len(pcm), max_samples=16000 * 8)
    assert pieces[0][0] == 16000 and pieces[-1][1] == len(pcm)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert all(end - begin <= 16000 * 8 for begin, end in pieces)
    assert 16000 * 7 <= pieces[0][1] <= 16000 * 7 + 800


def test_backend_registry_and_whisper_errors(monkeypatch):
    assert {"pocketsphinx", "whisper"} <= set(list_backends())
    with pytest.raises(ValueError, match="unknown ASR backend 'nope'"):
        get_backend("nope")
    with pytest.raises(ASRError, match="needs a local model"):
        get_backend("whisper")
    for name in ("faster_whisper", "whisper"):
        monkeypatch.setitem(sys.modules, name, None)  # neither engine importable
    with pytest.raises(ASRError, match="pip install faster-whisper"):
        get_backend("whisper", model="/models/small")


def test_whisper_backend_converts_engine_segments(monkeypatch):
    """The adapter around faster_whisper, with the engine replaced by a stand-in that records its calls."""
    calls = {}

    class FakeModel:
        def __init__(self, model, device, local_files_only):
            calls["init"] = (model, device, local_files_only)

        def transcribe(self, audio, language=None, **options):
            calls["audio"] = (audio.dtype, audio.shape, language, options)
            segment = types.SimpleNamespace
            return iter([segment(start=-0.01, end=1.5, text=" Hello  world "), segment(start=1.5, end=2.0, text=" "),
                         segment(start=2.0, end=9.0, text="past the end")]), None

    module = types.ModuleType("faster_whisper")
    module.WhisperModel = FakeModel
    monkeypatch.setitem(sys.modules, "faster_whisper", module)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "faster_whisper" else None)
    backend = WhisperBackend(model="/models/small", language="en", beam_size=2)
    narrations = backend.transcribe(np.zeros(24000 * 3, np.float32), 24000)
    assert calls["init"] == ("/models/small", "auto", True)  # never allowed to download
    assert calls["audio"] == (np.float32, (48000,), "en", {"beam_size": 2})  # resampled to 16 kHz
    assert narrations == [Narration(0.0, 1.5, "Hello world"), Narration(2.0, 3.0, "past the end")]


# ----------------------------------------------------------------------------------------------------- audio files


def test_decode_audio_of_a_whole_file_matches_the_encoded_signal(tmp_path, synthetic_media):
    spec = synthetic_media.write_video(tmp_path / "pcm.mkv", codec="libx264", fps=10, num_frames=20,
                                       audio_codec="pcm_s16le", audio_rate=44100)
    waveform = decode_audio(spec.path, sample_rate=16000)
    assert waveform.dtype == np.float32 and abs(len(waveform) - 16000 * spec.audio_duration) <= 16
    t = np.arange(len(waveform)) / 16000
    inner = slice(160, len(waveform) - 160)  # the resampling filter's edges
    np.testing.assert_allclose(waveform[inner], synthetic_media.audio_signal(t)[inner], atol=0.01)


def test_decode_audio_errors_have_reasons(tmp_path, synthetic_media):
    no_audio = synthetic_media.write_video(tmp_path / "silent.mp4", codec="libx264", fps=10, num_frames=5,
                                           audio_codec=None).path
    (tmp_path / "text.mp4").write_text("not a video\n" * 10)
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name, reason in [("silent.mp4", "no_audio"), ("text.mp4", "not_media"), ("empty.mp4", "empty"),
                         ("missing.mp4", "missing")]:
        with pytest.raises(MediaError) as info:
            decode_audio(tmp_path / name)
        assert info.value.reason == reason and name in str(info.value)
    assert no_audio.exists()


def _write_speech_video(path, waveform: np.ndarray, rate: int) -> None:
    """An H.264 + AAC mp4: black 64x48 frames at 10 fps for the length of the audio."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        black = np.zeros((48, 64, 3), np.uint8)
        for index in range(int(np.ceil(len(waveform) / rate * 10))):
            frame = av.VideoFrame.from_ndarray(black, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        chunk = audio.codec_context.frame_size or 1024
        for begin in range(0, len(waveform), chunk):
            frame = av.AudioFrame.from_ndarray(waveform[None, begin:begin + chunk].copy(), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = rate, begin
            container.mux(audio.encode(frame))
        container.mux(audio.encode())


@needs_espeak
@pytest.mark.slow
def test_transcribe_command_writes_vtt_beside_each_video(tmp_path, speech, capsys):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (optional extra 'asr')")
    from mmv.cli.main import main

    waveform, rate = speech
    _write_speech_video(tmp_path / "talk.mp4", waveform, rate)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)  # a truncated mp4
    (tmp_path / "notes.txt").write_text("not media")
    assert main(["transcribe", str(tmp_path), "--workers", "2"]) == 0  # one recogniser per worker process
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["files"], summary["transcribed"], summary["failed"]) == (2, 1, 1)
    assert summary["audio_seconds"] == pytest.approx(len(waveform) / rate, abs=0.1)
    assert list(summary["failures"].values()) == [[str(tmp_path / "broken.mp4")]]
    narrations = read_narrations(tmp_path / "talk.vtt")
    assert _recall(narrations) >= 0.6, narrations
    _check_times(narrations, waveform, rate)
    assert not (tmp_path / "broken.vtt").exists()
    # A second run leaves the existing .vtt alone; --overwrite would redo it.
    before = (tmp_path / "talk.vtt").read_bytes()
    assert main(["transcribe", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["transcribed"], summary["skipped_existing"], summary["failed"]) == (0, 1, 1)
    assert (tmp_path / "talk.vtt").read_bytes() == before

