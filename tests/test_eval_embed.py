"""``mmv embed`` (resumable parts, corrupt files, parquet, text lines) and ``mmv eval`` / ``mmv deflate`` commands."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval_fixtures import (  # noqa: F401
    class_frames,
    class_tone,
    make_hmdb51,
    single_thread,
    tiny_model,
    write_image,
    write_video,
    write_wav,
)
from mmv.cli.main import main
from mmv.eval.embed import EmbedOptions, embed_files, read_embeddings
from mmv.data.audio import MelConfig
from mmv.data.windows import Windowing
from mmv.preprocess import AudioPreprocess, Preprocess, VideoPreprocess

SPEC = Preprocess(video=VideoPreprocess(num_frames=8, fps=10, min_resize=32, crop=32))


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for i in range(3):
        write_video(root / "videos" / f"clip{i}.mp4", class_frames(i, i, num_frames=20),
                    audio=class_tone(i, 2.0, 16000), audio_rate=16000)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    write_wav(root / "sounds" / "tone.wav", class_tone(1, 1.5, 16000), 16000)
    (root / "queries.txt").write_text("word1 word2\n\nword3\n")
    return root


@pytest.fixture(scope="module")
def saved_model(tiny_model, tmp_path_factory) -> Path:
    import mmv

    return mmv.save(tiny_model, tmp_path_factory.mktemp("model") / "tiny")


def test_embed_videos_windows_index_and_resume(media, tiny_model, tmp_path, single_thread):
    opts = EmbedOptions(modality="video", space="vt", windowing=Windowing("even", 2), preprocess=SPEC)
    out = tmp_path / "emb"
    report = embed_files(tiny_model, [media / "videos"], out, opts, files_per_part=2, progress=False)
    assert report["files"] == 4 and report["embedded"] == 3 and report["rows_written"] == 6
    assert report["skipped"]["total"] == 1 and str(media / "videos" / "broken.mp4") in str(report["skipped"])
    rows, emb = read_embeddings(out)
    assert emb.shape == (6, 64) and len(rows) == 6
    assert [(Path(r["file"]).name, r["start"]) for r in rows[:2]] == [("clip0.mp4", 0.0), ("clip0.mp4", 1.2)]
    assert rows[1]["end"] == pytest.approx(2.0)
    # Against a direct forward pass of the first window.
    from mmv.data.media import decode_clip

    clip = decode_clip(media / "videos" / "clip0.mp4", 0.0, 8, 10, with_audio=False, short_side=32).frames
    with torch.no_grad():
        direct = tiny_model.encode_video(torch.from_numpy(clip[None]).float() / 255, space="vt").numpy()[0]
    # Batched and single-clip forwards may take different oneDNN kernels (about 1e-5 of the scale apart); a wrong
    # window, resize or pixel range would move the embedding by O(1).
    np.testing.assert_allclose(emb[0], direct, rtol=1e-3, atol=1e-4 * np.abs(direct).max())
    # A second run resumes: nothing new is embedded, the broken file is retried and skipped again.
    again = embed_files(tiny_model, [media / "videos"], out, opts, files_per_part=2, progress=False)
    assert again["already_embedded"] == 3 and again["rows_written"] == 0
    assert len(read_embeddings(out)[0]) == 6
    with pytest.raises(ValueError, match="other settings"):
        embed_files(tiny_model, [media / "videos"], out, EmbedOptions(modality="video", space="va", preprocess=SPEC),
                    progress=False)


def test_embed_resume_after_interruption(media, tiny_model, tmp_path, single_thread):
    opts = EmbedOptions(modality="video", space="repr", windowing=Windowing("one"), preprocess=SPEC)
    out = tmp_path / "emb"
    files = sorted((media / "videos").glob("clip*.mp4"))
    embed_files(tiny_model, files[:1], out, opts, files_per_part=1, progress=False)  # an "interrupted" first run
    report = embed_files(tiny_model, files, out, opts, files_per_part=1, progress=False)
    assert report["already_embedded"] == 1 and report["embedded"] == 2
    rows, emb = read_embeddings(out)
    assert [Path(r["file"]).name for r in rows] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"] and emb.shape[0] == 3


def test_embed_audio_and_text(media, tiny_model, tmp_path, single_thread):
    opts = EmbedOptions(modality="audio", space="va", windowing=Windowing("sliding", stride=0.5),
                        preprocess=Preprocess(audio=AudioPreprocess(1.0, MelConfig(sample_rate=16000, n_fft=683, hop_length=341))))
    report = embed_files(tiny_model, [media / "sounds" / "tone.wav", media / "videos" / "clip1.mp4"], tmp_path / "a",
                         opts, progress=False)
    rows, emb = read_embeddings(tmp_path / "a")
    # 1.5 s file: windows at 0 and 0.5; 2 s video track: 0, 0.5, 1.0.
    assert report["rows_written"] == 5 and emb.shape == (5, 128)
    assert [r["start"] for r in rows] == [0.0, 0.5, 0.0, 0.5, 1.0]
    if _has_pyarrow():  # the same embeddings in the parquet format
        embed_files(tiny_model, [media / "sounds" / "tone.wav", media / "videos" / "clip1.mp4"], tmp_path / "p",
                    opts, fmt="parquet", progress=False)
        rows_p, emb_p = read_embeddings(tmp_path / "p")
        assert rows_p == rows
        np.testing.assert_array_equal(emb_p, emb)
    vocab = tmp_path / "vocab.txt"
    from mmv.data.tokenizer import Vocabulary

    Vocabulary(["word1", "word2", "word3"]).save(vocab)
    from mmv.eval.io import load_tokenizer

    text = embed_files(tiny_model, [media / "queries.txt"], tmp_path / "t", EmbedOptions(modality="text", space="vt"),
                       tokenizer=load_tokenizer(vocab), progress=False)
    rows, emb = read_embeddings(tmp_path / "t")
    assert text["rows_written"] == 2 and [(r["line"], r["text"]) for r in rows] == [(0, "word1 word2"), (2, "word3")]
    ids = load_tokenizer(vocab)(["word1 word2"])
    with torch.no_grad():
        direct = tiny_model.encode_text(torch.from_numpy(ids), space="vt").numpy()[0]
    np.testing.assert_allclose(emb[0], direct, rtol=1e-5, atol=1e-6)


def test_cli_embed_eval_and_deflate(media, saved_model, tmp_path, single_thread):
    assert main(["embed", str(media / "videos" / "clip0.mp4"), "--model", str(saved_model), "--modality", "video",
                 "--space", "va", "--windows", "3", "--frames", "8", "--fps", "10", "--min-resize", "32",
                 "--crop", "32", "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    assert read_embeddings(tmp_path / "e")[1].shape == (3, 128)

    hmdb = make_hmdb51(tmp_path / "hmdb")
    out = tmp_path / "results"
    assert main(["eval", "hmdb51", "--model", str(saved_model), "--data", str(hmdb), "--out", str(out),
                 "--frames", "8", "--fps", "10", "--min-resize", "32", "--crop", "32", "--passes", "1",
                 "--windows", "1", "--splits", "1", "--no-progress"]) == 0
    result = json.loads((out / "hmdb51.json").read_text())
    assert result["splits"]["split1"]["C"] == 3e-4  # the published HMDB51 value for S3D-G
    assert "| split1 |" in (out / "hmdb51.md").read_text() and list((out / "cache").glob("*.npz"))

    images = tmp_path / "imgs"
    for label in range(2):
        for i in range(3):
            write_image(images / f"c{label}" / f"{i}.png", label, seed=i)
    assert main(["deflate", "--model", str(saved_model), "--images", str(images), "--out", str(tmp_path / "defl"),
                 "--static-frames", "4", "--image-size", "32", "--image-crop", "32", "--epochs", "1",
                 "--no-progress"]) == 0
    import mmv

    deflated = mmv.load(tmp_path / "defl")
    assert deflated.deflated
    assert deflated.encode_video(torch.rand(2, 32, 32, 3), space="repr").shape == (2, 128)
    description = json.loads((tmp_path / "defl" / "config.json").read_text())
    assert description["deflation"]["bn_trained"] and description["deflation"]["num_images"] == 6


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["eval", "ucf101", "--model", str(tmp_path / "missing"), "--data", str(tmp_path)]) == 1
    assert "neither a saved model" in capsys.readouterr().err
