"""The model carries its preprocessing: saved, loaded, recorded by training, used by evaluation and embedding.

The central test trains a tiny model with non-default frames, crop and mel edges through ``mmv train``, then checks
that ``mmv embed`` and ``mmv eval`` (no clip flag given) produce exactly the features computed by hand from those
settings, while the library defaults would give other ones.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from eval_fixtures import single_thread  # noqa: F401
from eval_fixtures import class_frames, class_tone, resize_short_side, write_video, write_wav
from mmv.data.audio import MelConfig, log_mel_spectrogram
from mmv.data.tokenizer import Vocabulary
from mmv.preprocess import AudioPreprocess, ImagePreprocess, Preprocess, TextPreprocess, VideoPreprocess

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Deliberately not the defaults: 6 frames at 5 fps, short side 30 then a 24 crop, 16 kHz audio with mel edges
# 300-3000 Hz over 24 bins, 6 words per sentence.
DATA = {"num_frames": 6, "fps": 5.0, "crop": 24, "min_resize": 30, "sample_rate": 16000, "num_mel_bins": 24,
        "stft_window": 400, "stft_hop": 200, "mel_fmin": 300.0, "mel_fmax": 3000.0, "max_words": 6}


# ----------------------------------------------------------------------------------------------------------------
# The description: round trips, vocabulary, old models
# ----------------------------------------------------------------------------------------------------------------

def test_released_settings_and_round_trip_through_save_and_load(tmp_path: Path) -> None:
    import mmv

    released = Preprocess.released()
    assert (released.video.num_frames, released.video.fps, released.video.min_resize, released.video.crop) == (
        32, 12.5, 224, 224)
    assert released.audio.num_samples == 153_600 and released.audio.mel == MelConfig()  # 3.2 s at 48 kHz, DMVR's
    assert released.text.max_words == 16 and released.text.vocabulary is None and released.source == "released"
    model = mmv.create_model("mmv_fac_s3dg")  # created by name: the released settings, ready for the weights
    assert model.preprocess == released
    tiny = mmv.create_model("mmv_tiny_s3dg")
    assert tiny.preprocess.source == "default"
    vocabulary = Vocabulary(["onion", "chop", "bird"])
    tiny.preprocess = Preprocess.from_training_data(DATA, vocabulary)
    for target in (tmp_path / "folder", tmp_path / "single.safetensors"):
        mmv.save(tiny, target)
        loaded = mmv.load(target)
        assert loaded.preprocess == tiny.preprocess and loaded.preprocess.text.vocabulary == vocabulary
    description = json.loads((tmp_path / "folder" / "config.json").read_text())
    stored = description["preprocess"]
    assert stored["audio"]["mel"]["fmin"] == 300.0 and stored["video"]["crop"] == 24
    assert stored["text"]["vocabulary"]["size"] == len(vocabulary) == 5  # padding and unknown included
    assert len(stored["text"]["stop_words"]) == 179  # the list is stored, not a name


def test_a_vocabulary_that_does_not_match_its_record_is_refused(tmp_path: Path) -> None:
    import mmv

    model = mmv.create_model("mmv_tiny_s3dg")
    model.preprocess = model.preprocess.with_vocabulary(Vocabulary(["a", "b"]))
    mmv.save(model, tmp_path / "m")
    Vocabulary(["a", "c"]).save(tmp_path / "m" / "vocab.json")
    with pytest.raises(ValueError, match="vocab.json: the vocabulary does not match"):
        mmv.load(tmp_path / "m")
    (tmp_path / "m" / "vocab.json").unlink()
    with pytest.raises(ValueError, match="vocab.json: missing"):
        mmv.load(tmp_path / "m")


def _old_description(folder: Path, **fields) -> None:
    """Rewrites a saved model's config.json as a version without stored preprocessing wrote it."""
    path = folder / "config.json"
    description = json.loads(path.read_text())
    del description["preprocess"]
    path.write_text(json.dumps({**description, **fields}))


def test_models_saved_before_preprocessing_was_stored_still_load(tmp_path: Path) -> None:
    import mmv

    model = mmv.create_model("mmv_tiny_s3dg")
    vocab = tmp_path / "vocab.txt"
    Vocabulary(["onion", "chop"]).save(vocab)
    # A trained model: its training config has the clip settings, but (older version) no mel edges.
    data = {k: v for k, v in DATA.items() if k not in ("mel_fmin", "mel_fmax")} | {"vocab": str(vocab)}
    mmv.save(model, tmp_path / "trained")
    _old_description(tmp_path / "trained", train_config={"data": data}, step=10)
    with pytest.warns(UserWarning, match="saved without its preprocessing") as caught:
        loaded = mmv.load(tmp_path / "trained")
    assert "data.mel_fmin" in str(caught[0].message) and "data.mel_fmax" in str(caught[0].message)
    pre = loaded.preprocess
    assert (pre.video.num_frames, pre.video.fps, pre.video.min_resize, pre.video.crop) == (6, 5.0, 30, 24)
    assert (pre.audio.mel.sample_rate, pre.audio.mel.n_mels, pre.audio.mel.n_fft) == (16000, 24, 400)
    assert (pre.audio.mel.fmin, pre.audio.mel.fmax) == (80.0, 7600.0)  # assumed: the training defaults
    assert pre.text.max_words == 6 and pre.text.vocabulary == Vocabulary.load(vocab)
    # A converted released model of an earlier version: the released settings.
    mmv.save(model, tmp_path / "converted")
    _old_description(tmp_path / "converted", source={"file": "mmv_s3d.pkl", "converted_from": "official"})
    with pytest.warns(UserWarning, match="released settings"):
        assert mmv.load(tmp_path / "converted").preprocess.video == Preprocess.released().video
    # Nothing to go by: the defaults, all of it assumed.
    mmv.save(model, tmp_path / "bare")
    _old_description(tmp_path / "bare")
    with pytest.warns(UserWarning, match="everything"):
        assert mmv.load(tmp_path / "bare").preprocess.assumed == ("everything",)


def test_override_reports_what_contradicts_the_model() -> None:
    base = Preprocess.from_training_data(DATA)
    changed, conflicts = base.override(**{"video.fps": 10, "video.crop": 24, "audio.mel.fmax": 4000,
                                          "windows": None})
    assert (changed.video.fps, changed.audio.mel.fmax) == (10.0, 4000.0)
    assert conflicts == {"video.fps": {"model": 5.0, "used": 10.0}, "audio.mel.fmax": {"model": 3000.0, "used": 4000.0}}
    assert changed.video.crop == 24 and "video.crop" not in conflicts  # the same value is no contradiction
    with pytest.raises(ValueError, match="unknown preprocessing setting 'video.frames'"):
        base.override(**{"video.frames": 3})
    with pytest.raises(ValueError, match="crop"):
        base.override(**{"video.crop": 64})  # larger than the resized short side


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        VideoPreprocess(num_frames=0)
    with pytest.raises(ValueError):
        ImagePreprocess(min_resize=100, crop=200)
    with pytest.raises(ValueError):
        AudioPreprocess(clip_seconds=0)
    with pytest.raises(ValueError, match="no word vocabulary"):
        TextPreprocess().tokenizer()


# ----------------------------------------------------------------------------------------------------------------
# A model trained with non-default settings is evaluated and embedded with exactly those settings
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny model trained by ``mmv train`` (2 steps) on videos with sound and captions, with DATA's settings."""
    from mmv.cli.main import main
    from mmv.data.narrations import Narration, write_webvtt

    root = tmp_path_factory.mktemp("trained")
    videos = root / "videos"
    for i in range(4):
        path = write_video(videos / f"clip{i}.mp4", class_frames(i, i, num_frames=20, size=40), fps=10,
                           audio=class_tone(i, 2.0, 16000), audio_rate=16000)
        write_webvtt([Narration(0.0, 2.0, f"chop onion number {i}")], path.with_suffix(".vtt"))
    vocab = root / "vocab.txt"
    Vocabulary(["chop", "onion", "number", "0", "1", "2", "3"]).save(vocab)
    overrides = [f"data.{k}={v}" for k, v in DATA.items()] + [
        f"data.datasets=[{{kind: folder, path: {videos}}}]", f"data.vocab={vocab}", "data.workers=0",
        "data.num_narrations=1", "model.name=mmv_tiny_s3dg", "run.steps=2", "run.batch_size=2", "run.device=cpu",
        "run.tensorboard=false", "run.progress=false", f"run.out_dir={root / 'run'}", "optim.warmup_steps=1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation warnings
        assert main(["train", "--config", str(CONFIGS / "synthetic_tiny.yaml"), *overrides]) == 0
    checkpoints = sorted((root / "run").glob("ckpt_*"))
    assert checkpoints, "training wrote no checkpoint"
    return {"root": root, "videos": videos, "model": checkpoints[-1], "vocab": vocab}


def _hand_video_features(model, path: Path, num_windows: int, space: str) -> np.ndarray:
    """DATA's clips by hand: evenly spaced 6-frame windows at 5 fps, short side resized to 30, centre 24 crop."""
    from mmv.data.media import decode_clip, evenly_spaced_starts, probe

    rows = []
    for start in evenly_spaced_starts(probe(path).duration, 6 / 5.0, num_windows):
        frames = resize_short_side(decode_clip(path, start, 6, 5.0, with_audio=False).frames, 30)
        top, left = (frames.shape[1] - 24) // 2, (frames.shape[2] - 24) // 2
        clip = torch.from_numpy(frames[:, top:top + 24, left:left + 24].copy()).float()[None] / 255
        with torch.no_grad():
            rows.append(model.encode_video(clip, space=space)[0].numpy())
    return np.stack(rows)


def _hand_audio_features(model, path: Path, num_windows: int, space: str, seconds: float = 1.2,
                         mel_edges: tuple[float, float] = (300.0, 3000.0)) -> np.ndarray:
    """DATA's audio by hand: 16 kHz, windows of the clip length, log-mel with 24 bins between 300 and 3000 Hz."""
    from mmv.data.media import decode_audio, evenly_spaced_starts

    wave = decode_audio(path, sample_rate=16000)
    mel = MelConfig(sample_rate=16000, n_fft=400, hop_length=200, n_mels=24, fmin=mel_edges[0], fmax=mel_edges[1])
    rows = []
    for start in evenly_spaced_starts(len(wave) / 16000, seconds, num_windows):
        first, count = round(start * 16000), round(seconds * 16000)
        piece = np.pad(wave[first:first + count], (0, max(0, count - len(wave[first:first + count]))))
        with torch.no_grad():
            rows.append(model.encode_audio(log_mel_spectrogram(piece, mel)[None], space=space)[0].numpy())
    return np.stack(rows)


@pytest.mark.slow
def test_training_records_its_settings_and_embedding_uses_them_without_flags(trained, tmp_path, single_thread):
    import mmv
    from mmv.cli.main import main
    from mmv.eval.embed import read_embeddings

    model = mmv.load(trained["model"])
    assert model.preprocess == Preprocess.from_training_data(DATA) and model.preprocess.source == "training"
    assert model.preprocess.text.vocabulary == Vocabulary.load(trained["vocab"])
    clip = trained["videos"] / "clip1.mp4"
    # mmv embed, no clip flag: video windows as trained.
    assert main(["embed", str(clip), "--model", str(trained["model"]), "--modality", "video", "--space", "vt",
                 "--windows", "3", "--out", str(tmp_path / "v"), "--no-progress"]) == 0
    _, video = read_embeddings(tmp_path / "v")
    expected = _hand_video_features(model, clip, 3, "vt")
    # Batched and single forwards may take different oneDNN kernels (~1e-5 relative); wrong settings move O(1).
    np.testing.assert_allclose(video, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    meta = json.loads((tmp_path / "v" / "meta.json").read_text())
    assert meta["preprocess"]["video"]["crop"] == 24 and meta["overrides"] == {}
    # ... and audio windows with the model's mel edges (not the defaults, which give other features).
    assert main(["embed", str(clip), "--model", str(trained["model"]), "--modality", "audio", "--space", "va",
                 "--windows", "2", "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    _, audio = read_embeddings(tmp_path / "a")
    expected = _hand_audio_features(model, clip, 2, "va")
    np.testing.assert_allclose(audio, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    # The check can tell: the library's default mel edges (80-7600 Hz) on the same bins give other features.
    default_edges = _hand_audio_features(model, clip, 2, "va", mel_edges=(80.0, 7600.0))
    assert np.abs(default_edges - audio).max() > 100 * np.abs(audio - expected).max()
    # A flag that contradicts the model is used and recorded.
    assert main(["embed", str(clip), "--model", str(trained["model"]), "--modality", "video", "--fps", "10",
                 "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["overrides"] == {"video.fps": {"model": 5.0, "used": 10.0}}
    # The Python API reads the same settings: pooled windows equal the hand-made windows, pooled.
    pooled = mmv.embed_video(model, clip, space="vt", windows=3)
    hand = _hand_video_features(model, clip, 3, "vt")
    hand = (hand / np.linalg.norm(hand, axis=1, keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(pooled[0].numpy(), hand, rtol=1e-3, atol=1e-4)
    text = mmv.embed_text(model, ["chop the onion"], space="vt")  # the stored vocabulary, no --vocab
    ids = model.preprocess.text.tokenizer().encode_batch(["chop the onion"])
    assert ids.shape == (1, 6) and ids[0, :2].tolist() == [2, 3]  # 'the' is a stop word
    with torch.no_grad():
        direct = torch.nn.functional.normalize(model.encode_text(torch.from_numpy(ids), space="vt"), dim=-1)
    torch.testing.assert_close(text, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_evaluation_uses_the_model_settings_without_flags(trained, tmp_path, single_thread):
    import mmv
    from mmv.cli.main import main

    model = mmv.load(trained["model"])
    data = tmp_path / "sounds"
    for label in range(2):
        for i in range(3):
            write_wav(data / f"class{label}" / f"{i}.wav", class_tone(label, 2.0, 16000, seed=i), 16000)
    out = tmp_path / "results"
    assert main(["eval", "audio-folder", "--model", str(trained["model"]), "--data", str(data), "--out", str(out),
                 "--audio-windows", "2", "--C", "1", "--no-progress"]) == 0
    result = json.loads((out / "audio-folder.json").read_text())
    assert result["preprocess"]["used"] == model.preprocess.to_dict(include_vocabulary=False)
    assert result["preprocess"]["differs_from_model"] == {}
    # The cached window features are the hand-made ones, file by file.
    (cache_file,) = list((out / "cache").glob("audio-folder-audio-*.npz"))
    with np.load(cache_file) as cached:
        rows, owner = cached["rows"], cached["owner"]
    files = sorted(data.rglob("*.wav"))
    from mmv.eval.datasets import folder_split

    split = folder_split(data, extensions=(".wav",), seed=0)
    order = [f.path for f in split.train + split.test]
    assert sorted(order) == files
    for index, path in enumerate(order):
        expected = _hand_audio_features(model, path, 2, "repr")
        np.testing.assert_allclose(rows[owner == index], expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_eval_applies_a_protocol_to_released_models_only_and_flags_win(tmp_path):
    """mmv eval: the model's settings, the published protocol's for a released model, then the flags; all recorded."""
    import argparse

    import mmv
    from mmv.cli.eval import add_parser, resolve_preprocess

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    released = mmv.create_model("mmv_fac_s3dg")
    args = parser.parse_args(["eval", "hmdb51", "--model", "m", "--data", str(tmp_path)])
    preprocess, record = resolve_preprocess(args, released)
    assert (preprocess.video.fps, preprocess.video.crop, preprocess.video.num_frames) == (10.0, 200, 32)
    assert record["differs_from_model"] == {"video.fps": {"model": 12.5, "used": 10.0, "by": "protocol"},
                                            "video.crop": {"model": 224, "used": 200, "by": "protocol"}}
    args = parser.parse_args(["eval", "hmdb51", "--model", "m", "--data", str(tmp_path), "--fps", "12.5",
                              "--frames", "16"])
    preprocess, record = resolve_preprocess(args, released)
    assert (preprocess.video.fps, preprocess.video.crop, preprocess.video.num_frames) == (12.5, 200, 16)
    assert record["differs_from_model"] == {"video.crop": {"model": 224, "used": 200, "by": "protocol"},
                                            "video.num_frames": {"model": 32, "used": 16, "by": "flag"}}
    trained = mmv.create_model("mmv_tiny_s3dg")
    trained.preprocess = Preprocess.from_training_data(DATA)
    args = parser.parse_args(["eval", "esc50", "--model", "m", "--data", str(tmp_path)])
    preprocess, record = resolve_preprocess(args, trained)
    assert preprocess == trained.preprocess and record["differs_from_model"] == {}  # its own clips, no protocol
    assert resolve_preprocess(args, released)[0].audio.clip_seconds == 2.0
