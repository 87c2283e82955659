"""The lean install: ``pip install mmv`` without extras must load, save, run, decode and embed, and name an extra it
lacks.

``.ci/run`` runs this with the python of a fresh venv that holds torch and ``pip install -e .`` only.
``tests/test_lean_install.py`` runs the same checks in the development venv with the extras' packages blocked from
import, so that a test run catches a core module that starts importing one of them.

    python .ci/lean_check.py
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
import sys
import tempfile
from pathlib import Path

# Packages that only extras install (pyproject.toml): a lean install has none of them.
EXTRA_PACKAGES = ("tensorboard", "webdataset", "matplotlib", "sklearn", "scipy")
DEMO_NEEDS_EXTRA = "pip install 'mmv[demo]'"


def check_extras_absent() -> None:
    found = [name for name in EXTRA_PACKAGES if importlib.util.find_spec(name) is not None]
    assert not found, f"not a lean install, these come with extras only: {found}"


def write_mp4(path: Path, seconds: float = 2.0, fps: int = 10, rate: int = 48000) -> None:
    """A small H.264 video (64x48, a grey level rising frame by frame) with an AAC soundtrack (a 440 Hz tone)."""
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(round(seconds * fps)):
            image = np.full((48, 64, 3), 10 * i, dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * rate)) / rate)).astype(np.float32)
        chunk = audio.codec_context.frame_size or 1024
        for begin in range(0, len(tone), chunk):
            frame = av.AudioFrame.from_ndarray(tone[None, begin:begin + chunk], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, begin
            container.mux(audio.encode(frame))
        container.mux(audio.encode())


def check_model(tmp: Path) -> None:
    """create_model, save, load, and a forward pass on video, audio and word ids."""
    import torch

    import mmv

    mmv.save(mmv.create_model("mmv_tiny_s3dg"), tmp / "model")
    model = mmv.load(tmp / "model").eval()
    with torch.no_grad():
        out = model(video=torch.rand(2, 4, 32, 32, 3), audio=torch.randn(2, 48, 80),
                    word_ids=torch.randint(1, 2048, (2, 16)))
    assert {"vid_embd_toaud", "aud_embd_tovid", "txt_embd_tovid"} <= set(out), sorted(out)


def check_media(tmp: Path) -> None:
    """A clip decoded from an MP4 (frames and sound) and the log-mel spectrogram of its sound."""
    from mmv.data.audio import log_mel_spectrogram
    from mmv.data.media import decode_clip

    write_mp4(tmp / "clip.mp4")
    clip = decode_clip(tmp / "clip.mp4", start=0.5, num_frames=8, fps=10.0)
    assert clip.frames.shape == (8, 48, 64, 3), clip.frames.shape
    assert clip.has_audio and clip.audio is not None and clip.audio.shape == (38400,), clip.audio
    assert clip.audio.std() > 0.1, "the tone did not come back"
    mel = log_mel_spectrogram(clip.audio)
    assert mel.shape == (38, 80), mel.shape


def check_embed(tmp: Path) -> None:
    """mmv.embed_video / embed_audio / embed_text / embed_image on real MP4 files, with the model's own settings."""
    import torch

    import mmv
    from mmv.data.tokenizer import Vocabulary
    from mmv.preprocess import Preprocess

    if not (tmp / "clip.mp4").exists():
        write_mp4(tmp / "clip.mp4")
    model = mmv.create_model("mmv_tiny_s3dg")
    data = {"num_frames": 4, "fps": 10.0, "crop": 32, "min_resize": 32, "sample_rate": 16000, "stft_window": 512,
            "stft_hop": 256, "num_mel_bins": 40, "mel_fmin": 80.0, "mel_fmax": 7000.0, "max_words": 8}
    model.preprocess = Preprocess.from_training_data(data, Vocabulary(["tone", "grey", "video"]))
    mmv.save(model, tmp / "embedder")
    model = mmv.load(tmp / "embedder")
    videos = mmv.embed_video(model, [tmp / "clip.mp4", tmp / "clip.mp4"], space="vt")
    sounds = mmv.embed_audio(model, [tmp / "clip.mp4"], space="va")
    texts = mmv.embed_text(model, ["a grey video", "a tone"], space="vt")
    images = mmv.embed_image(model, torch.randint(0, 256, (3, 40, 50, 3), dtype=torch.uint8), space="vt")
    assert videos.shape == (2, 64) and sounds.shape == (1, 128), (videos.shape, sounds.shape)
    assert texts.shape == (2, 64) and images.shape == (3, 64), (texts.shape, images.shape)
    assert torch.isfinite(torch.cat([videos, texts, images])).all() and torch.isfinite(sounds).all()
    assert not model.deflated, "embed_image must deflate a copy, never the caller's model"


def check_cli_names_extra(tmp: Path) -> None:
    """``mmv demo`` without the demo extra, through ``mmv.cli.main.main``: one line naming the extra, status 1."""
    from mmv.cli.main import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["demo", "--quick", "--out", str(tmp / "demo")])
    _check_one_line_error(status, stdout.getvalue(), stderr.getvalue())


def check_console_script_names_extra(tmp: Path) -> None:
    """The same through the ``mmv`` console script of this environment (its entry point and exit status)."""
    script = Path(sys.executable).with_name("mmv")
    out = subprocess.run([str(script), "demo", "--quick", "--out", str(tmp / "demo")], capture_output=True,
                         text=True, timeout=300)
    _check_one_line_error(out.returncode, out.stdout, out.stderr)


def _check_one_line_error(status: int, stdout: str, stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert status == 1 and len(lines) == 1 and not stdout.strip(), (status, stdout, stderr)
    assert lines[0].startswith("mmv demo: error: ") and DEMO_NEEDS_EXTRA in lines[0], lines[0]


def main() -> None:
    check_extras_absent()
    with tempfile.TemporaryDirectory() as tmp:
        check_model(Path(tmp))
        check_media(Path(tmp))
        check_embed(Path(tmp))
        check_cli_names_extra(Path(tmp))
        check_console_script_names_extra(Path(tmp))
    print("lean install: ok")


if __name__ == "__main__":
    main()
