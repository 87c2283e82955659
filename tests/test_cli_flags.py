"""One vocabulary of flags across commands (docs/cli.md): --out for outputs, --model for the MMV model, --crop and
--image-crop, recursion by default with --no-recursive, --no-progress wherever a bar is shown; the old spellings keep
working with a warning; every command's --help."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmv.cli.main import SUBCOMMAND_MODULES, build_parser, main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMMANDS = [name.replace("_", "-") for name in SUBCOMMAND_MODULES]
# The commands that show a progress bar, each with its --no-progress (and any command added later that has one).
WITH_PROGRESS = ("demo", "demo-data", "download", "embed", "train", "eval", "deflate", "prepare", "vocab",
                 "transcribe", "index")


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself_in_one_vocabulary(command, capsys):
    text = help_text(command, capsys)
    assert text.startswith(f"usage: mmv {command}")
    assert "--no-progress" in text or command not in WITH_PROGRESS
    for old in ("--recursive ", "--frames N", "mmv convert mmv_s3d.pkl models", "demo-data DIR"):
        assert old not in text, (command, old)  # an old spelling is accepted, never advertised
    if command in ("embed", "eval", "deflate"):  # the commands that crop images: --image-crop (--crop: video)
        assert "--image-crop" in text and "--image-size" in text


def test_old_spellings_keep_working_with_one_warning(tmp_path, capsys):
    missing = tmp_path / "mmv_s3d.pkl"
    # convert PKL OUT: the output as a positional.
    assert main(["convert", str(missing), str(tmp_path / "out")]) == 1  # the warning, then the missing file
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"mmv convert: warning: the positional output is deprecated; use --out {tmp_path / 'out'}"
    assert err[1].startswith("mmv convert: error: ") and "no such file" in err[1]
    assert main(["convert", str(missing), str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "given twice" in capsys.readouterr().err
    # demo-data DIR
    assert main(["demo-data", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "given twice" in capsys.readouterr().err
    # deflate --frames/--crop, transcribe --model: stored where the new spelling stores them.
    parser = build_parser()
    args = parser.parse_args(["deflate", "--model", "m", "--images", "i", "--out", "o", "--frames", "4", "--crop",
                              "32"])
    assert (args.static_frames, args.image_crop) == (4, 32)
    args = parser.parse_args(["transcribe", "videos", "--model", "whisper-small", "--recursive"])
    assert args.asr_model == "whisper-small" and not args.no_recursive
    err = capsys.readouterr().err
    assert "mmv deflate: warning: --frames is deprecated; use --static-frames" in err
    assert "mmv deflate: warning: --crop is deprecated; use --image-crop" in err
    assert "mmv transcribe: warning: --model is deprecated; use --asr-model" in err


def test_train_takes_out_and_no_progress(capsys):
    import yaml

    assert main(["train", "--config", str(CONFIGS / "synthetic_tiny.yaml"), "run.steps=3", "--out", "runs/yes",
                 "--no-progress", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["run"]["out_dir"], printed["run"]["progress"], printed["run"]["steps"]) == ("runs/yes", False, 3)
    assert main(["train", "--config", str(CONFIGS / "synthetic_tiny.yaml"), "--out", "a", "run.seed=1", "--out",
                 "b"]) == 2


def test_vocab_leaves_out_yt_dlp_sidecars_and_can_stay_in_one_folder(tmp_path, capsys):
    corpus = tmp_path / "downloads"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "talk.en.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nchop the onions\n")
    (corpus / "sub" / "deep.en.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nfry garlic\n")
    # What yt-dlp saves beside talk.mp4 besides captions: metadata and the live chat, both .json.
    (corpus / "talk.info.json").write_text(json.dumps({"id": "x", "title": "words that are no captions"}))
    (corpus / "talk.live_chat.json").write_text(json.dumps({"replayChatItemAction": {}}) + "\n")
    out = tmp_path / "vocab.txt"
    assert main(["vocab", str(corpus), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["files"], summary["failed"], summary["sidecars_left_out"]) == (2, 0, 2)
    assert set(out.read_text().split()) == {"<pad>", "<unk>", "chop", "onions", "fry", "garlic"}
    assert main(["vocab", str(corpus), "--out", str(out), "--no-progress", "--no-recursive"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files"] == 1 and "garlic" not in out.read_text().split()


def test_embed_no_recursive_and_the_image_crop(tmp_path, capsys):
    import mmv
    from eval_fixtures import write_image

    model_dir = mmv.save(mmv.create_model("mmv_tiny_s3dg"), tmp_path / "model")
    for name in ("a.png", "sub/b.png"):
        write_image(tmp_path / "images" / name, 0, seed=1)
    common = ["embed", str(tmp_path / "images"), "--model", str(model_dir), "--modality", "image", "--static-frames",
              "2", "--image-size", "36", "--no-progress"]
    assert main([*common, "--image-crop", "32", "--out", str(tmp_path / "all")]) == 0
    assert main([*common, "--crop", "32", "--no-recursive", "--out", str(tmp_path / "top")]) == 0
    assert "--crop with --modality image is deprecated; use --image-crop" in capsys.readouterr().err
    from mmv.eval.embed import read_embeddings

    assert len(read_embeddings(tmp_path / "all")[0]) == 2 and len(read_embeddings(tmp_path / "top")[0]) == 1
    meta = json.loads((tmp_path / "top" / "meta.json").read_text())
    assert meta["overrides"]["image.crop"]["used"] == 32
