"""Helpers for the evaluation tests: tiny datasets in the official layouts, written with PyAV and Pillow.

Content is made so that a class is obvious to any network, even an untrained one: each class has its own colour
and its own tone, and videos of a class differ only by small noise. Linear probes on such data must reach 100%,
which is the hand-computed value the end-to-end tests check.
"""
from __future__ import annotations

import csv
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

PALETTE = np.array([[230, 30, 30], [30, 200, 40], [40, 60, 230], [220, 220, 40], [200, 40, 220]], dtype=np.float64)


@pytest.fixture
def single_thread():
    """Other test processes share the 2 cores; torch's default thread pool then thrashes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def calibrated_tiny_model(seed: int = 0) -> torch.nn.Module:
    """The registered tiny model with fixed random weights and BN statistics measured on random inputs, eval mode.

    A freshly initialised network in eval mode uses BN running statistics (0, 1) that do not fit its activations,
    and its deep features shrink towards zero; a few train-mode passes give it the statistics a trained model has.
    """
    import mmv

    torch.manual_seed(seed)
    model = mmv.create_model("mmv_tiny_s3dg")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration passes
    model.train()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(4):
            # Clips like the test data: a random colour per clip plus pixel noise.
            colour = torch.rand(8, 1, 1, 1, 3, generator=generator)
            video = (colour + 0.08 * torch.randn(8, 8, 32, 32, 3, generator=generator)).clamp(0, 1)
            model(video=video, audio=torch.randn(8, 64, 80, generator=generator),
                  word_ids=torch.randint(1, 100, (8, 6), generator=generator))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    return calibrated_tiny_model()


def class_frames(label: int, seed: int, num_frames: int = 12, size: int = 32, noise: float = 20.0) -> np.ndarray:
    """``[T, size, size, 3]`` uint8: the class colour (a palette colour, darker for labels past the palette) plus a
    little noise. Windows, crops and flips of such a clip all look alike, so features separate by class."""
    rng = np.random.default_rng(seed)
    colour = PALETTE[label % len(PALETTE)] * (1.0 - 0.35 * (label // len(PALETTE)))
    shape = (num_frames, size, size, 3)
    frames = np.broadcast_to(colour, shape) + rng.normal(0, noise, size=shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def resize_short_side(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` with the short side resized to ``size`` (torch, bilinear, antialiased, rounded)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    shape = (size, w * size // h) if h <= w else (h * size // w, size)
    x = torch.nn.functional.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def class_tone(label: int, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A sine at 300 * (label + 1) Hz with a little noise, mono float32."""
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, size=t.shape)
    return (0.5 * np.sin(2 * np.pi * 300 * (label + 1) * t) + noise).astype(np.float32)


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: int = 10, audio: np.ndarray | None = None,
                audio_rate: int = 16000, codec: str | None = None) -> Path:
    """Writes frames (and optionally a mono track) with PyAV: mpeg4 for .avi, H.264 otherwise."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or ("mpeg4" if path.suffix == ".avi" else "libx264")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {"crf": "10"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=audio_rate)
            audio_stream.layout = "mono"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, audio_rate)
    return path


def _encode_audio(container, stream, audio: np.ndarray, rate: int) -> None:
    import av

    chunk = stream.codec_context.frame_size or 1024
    for begin in range(0, len(audio), chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, begin:begin + chunk]), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = rate, begin
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_wav(path: str | os.PathLike, audio: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV with the standard library (ESC-50's format)."""
    import wave

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def write_image(path: str | os.PathLike, label: int, seed: int, size: int = 40) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(class_frames(label, seed, num_frames=1, size=size, noise=3.0)[0]).save(path)
    return path


# --------------------------------------------------------------------------------------------------- layouts
def make_ucf101(root: Path, classes=("ApplyEyeMakeup", "Basketball", "HandstandPushups"), groups: int = 5) -> Path:
    """UCF101 layout: groups g01..gNN, one clip each; split k tests on group k (as the official 25/7 groups)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for k in (1, 2, 3):
        train, test = [], []
        for label, name in enumerate(classes):
            for g in range(1, groups + 1):
                # Official quirk: the folder says HandstandPushups, the file name HandStandPushups.
                stem = name.replace("Handstand", "HandStand")
                rel = f"{name}/v_{stem}_g{g:02d}_c01.avi"
                (test if g == k else train).append((rel, label + 1))
        (lists / f"trainlist0{k}.txt").write_text("".join(f"{r} {lab}\n" for r, lab in train))
        (lists / f"testlist0{k}.txt").write_text("".join(f"{r}\n" for r, _ in test))
    for label, name in enumerate(classes):
        for g in range(1, groups + 1):
            stem = name.replace("Handstand", "HandStand")
            write_video(root / "UCF-101" / name / f"v_{stem}_g{g:02d}_c01.avi", class_frames(label, 100 * label + g))
    return root


def make_hmdb51(root: Path, classes=("brush_hair", "cartwheel"), per_class: int = 4) -> Path:
    """HMDB51 layout; per class and split: 2 train (1), 1 test (2), the rest unused (0); videos rotate roles."""
    split_dir = root / "testTrainMulti_7030_splits"
    split_dir.mkdir(parents=True)
    for label, name in enumerate(classes):
        names = [f"{name}_clip{i}.avi" for i in range(per_class)]
        for i, video in enumerate(names):
            write_video(root / name / video, class_frames(label, 50 * label + i))
        for k in (1, 2, 3):
            roles = ["1", "1", "2"] + ["0"] * (per_class - 3)
            roles = roles[-(k - 1):] + roles[:-(k - 1)] if k > 1 else roles
            (split_dir / f"{name}_test_split{k}.txt").write_text(
                "".join(f"{v} {r} \n" for v, r in zip(names, roles)))
    return root


def make_esc50(root: Path, num_classes: int = 3, per_fold: int = 1, rate: int = 16000, seconds: float = 2.0) -> Path:
    """ESC-50 layout: ``audio/{fold}-{id}-A-{target}.wav`` and ``meta/esc50.csv`` with 5 folds."""
    rows = []
    for fold in range(1, 6):
        for target in range(num_classes):
            for j in range(per_fold):
                name = f"{fold}-{100 * target + j}-A-{target}.wav"
                write_wav(root / "audio" / name, class_tone(target, seconds, rate, seed=fold * 10 + j), rate)
                rows.append({"filename": name, "fold": fold, "target": target, "category": f"class{target}",
                             "esc10": "False", "src_file": str(100 * target + j), "take": "A"})
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_msrvtt(root: Path, num_videos: int = 4, rate: int = 16000) -> Path:
    """MSR-VTT 1k-A layout: ``MSRVTT_JSFUSION_test.csv`` and ``videos/all/video<i>.mp4`` (with audio)."""
    rows = []
    for i in range(num_videos):
        frames = class_frames(i, 7 + i, num_frames=20)
        write_video(root / "videos" / "all" / f"video{i}.mp4", frames, audio=class_tone(i, 2.0, rate), audio_rate=rate)
        rows.append({"key": f"ret{i}", "vid_key": f"msr{i}", "video_id": f"video{i}",
                     "sentence": f"word{i} word{i + 1}"})
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["key", "vid_key", "video_id", "sentence"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_youcook2(root: Path) -> Path:
    """YouCook2 layout: two validation videos with two segments each, one training video, one missing video."""
    database = {}
    for v in range(2):
        frames = np.concatenate([class_frames(2 * v, 1, num_frames=20), class_frames(2 * v + 1, 2, num_frames=20)])
        write_video(root / "raw_videos" / "validation" / "101" / f"vid{v}.mp4", frames)
        database[f"vid{v}"] = {"subset": "validation", "recipe_type": "101", "duration": 4.0, "annotations": [
            {"segment": [0, 2], "id": 0, "sentence": f"step{2 * v}"},
            {"segment": [2, 4], "id": 1, "sentence": f"step{2 * v + 1}"}]}
    database["trainvid"] = {"subset": "training", "recipe_type": "101", "annotations": [
        {"segment": [0, 1], "id": 0, "sentence": "ignored"}]}
    database["gone"] = {"subset": "validation", "recipe_type": "101", "annotations": [
        {"segment": [0, 1], "id": 0, "sentence": "missing video"}]}
    (root / "youcookii_annotations_trainval.json").write_text(json.dumps({"database": database}))
    return root
