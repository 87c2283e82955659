"""Ordinary mistakes through the real ``mmv`` entry point: exit status, one line on stderr, no traceback, nothing
half-written; Ctrl-C; resume by a file's identity; file modes; the speed of ``mmv --help``."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from child_process import restore_ctrl_c
from eval_fixtures import class_frames, write_video

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENTRY = [sys.executable, "-c", "import sys; from mmv.cli.main import entry; sys.exit(entry())"]


def run_mmv(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    return subprocess.run([*ENTRY, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(result, status: int, *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if " error: " in line or "interrupted" in line]
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1, lines
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", class_frames(0, 0, num_frames=10), fps=10)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import mmv

    return mmv.save(mmv.create_model("mmv_tiny_s3dg"), tmp_path_factory.mktemp("model") / "tiny")


def test_missing_files_and_wrong_kinds_of_path(tmp_path, clip, model_dir):
    assert_one_line_error(run_mmv("info", tmp_path / "nothing"), 1, "nothing")
    (tmp_path / "a_file").write_text("x")
    result = run_mmv("embed", clip, "--model", model_dir, "--modality", "video", "--out", tmp_path / "a_file" / "sub",
                     "--no-progress")
    assert_one_line_error(result, 1, "a_file")
    vocab_folder = tmp_path / "vocab_folder"
    vocab_folder.mkdir()
    (tmp_path / "q.txt").write_text("hello\n")
    result = run_mmv("embed", tmp_path / "q.txt", "--model", model_dir, "--modality", "text", "--vocab",
                     vocab_folder, "--out", tmp_path / "t", "--no-progress")
    assert_one_line_error(result, 1, "vocab_folder")
    assert not (tmp_path / "t").exists()  # refused before anything was written


def test_damaged_weights_and_a_refused_checkpoint(tmp_path, model_dir):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_one_line_error(run_mmv("info", damaged), 1, "model.safetensors")
    (tmp_path / "q.txt").write_text("hello\n")
    result = run_mmv("embed", tmp_path / "q.txt", "--model", damaged, "--modality", "text", "--out", tmp_path / "e",
                     "--no-progress")
    assert_one_line_error(result, 1, "model.safetensors")
    assert not (tmp_path / "e").exists()
    evil = tmp_path / "mmv_s3d.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle that would run a command
    for command in (["convert", evil, "--out", tmp_path / "out"],
                    ["vocab", "recover", evil, "--word2vec", tmp_path / "q.txt", "--out", tmp_path / "v.json"]):
        result = run_mmv(*command)
        assert_one_line_error(result, 1, "mmv_s3d.pkl")
        assert "pwned" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "v.json").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = run_mmv("info", tmp_path / "nothing", env={"MMV_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "Traceback" in run_mmv("--debug", "info", tmp_path / "nothing").stderr


def test_a_run_that_produced_nothing_exits_non_zero(tmp_path, model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    result = run_mmv("embed", broken, "--model", model_dir, "--modality", "video", "--out", tmp_path / "e",
                     "--no-progress")
    assert_one_line_error(result, 1, "none of the 1 files")


def test_ctrl_c_during_embed_keeps_the_parts_and_says_how_to_continue(tmp_path, model_dir):
    folder = tmp_path / "many"
    for i in range(40):
        write_video(folder / f"v{i:02d}.mp4", class_frames(i % 3, i, num_frames=30), fps=10)
    out = tmp_path / "emb"
    process = subprocess.Popen([*ENTRY, "embed", str(folder), "--model", str(model_dir), "--modality", "video",
                                "--windows", "4", "--files-per-part", "1", "--out", str(out), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_ctrl_c)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("part-*.index.csv")):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted; the parts written so far are kept" in stderr
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*npy"))  # nothing half-written
    from mmv.eval.embed import read_embeddings

    done = len(read_embeddings(out)[0])
    assert done >= 4 and done % 4 == 0


def test_the_same_folder_spelled_two_ways_is_embedded_once(tmp_path, clip, model_dir):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    out = tmp_path / "emb"
    assert run_mmv("embed", "clips", "--model", model_dir, "--modality", "video", "--out", out, "--no-progress",
                   cwd=tmp_path).returncode == 0
    (tmp_path / "elsewhere").mkdir()
    again = run_mmv("embed", "../clips", "--model", model_dir, "--modality", "video", "--out", out, "--no-progress",
                    cwd=tmp_path / "elsewhere")
    assert again.returncode == 0
    report = json.loads((out / "report.json").read_text())
    assert report["already_embedded"] == 1 and report["rows_written"] == 0


def test_outputs_follow_the_umask(tmp_path, clip, model_dir):
    previous = os.umask(0o022)
    try:
        result = subprocess.run([*ENTRY, "embed", str(clip), "--model", str(model_dir), "--modality", "video",
                                 "--out", str(tmp_path / "emb"), "--no-progress"], capture_output=True, text=True)
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr[-2000:]
    for path in (tmp_path / "emb").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_help_answers_fast():
    best = min(_timed(run_mmv, "--help") for _ in range(3))
    assert best < 3.0, f"mmv --help took {best:.2f} s"  # about 0.1 s on 2 cores; torch is not imported
    result = run_mmv("embed", "--help")
    assert result.returncode == 0 and "--model" in result.stdout


def _timed(function, *args) -> float:
    began = time.perf_counter()
    result = function(*args)
    assert result.returncode == 0
    return time.perf_counter() - began


BROKEN_MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64  # a truncated MP4: a header and nothing else


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, clip, model_dir):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "corpus.txt").write_text("cut the onions\n")
    (tmp_path / "folder").mkdir()
    under_a_file = tmp_path / "a_file" / "sub"
    commands = [
        ["vocab", tmp_path / "corpus.txt", "--out", under_a_file / "v.txt", "--no-progress"],
        ["convert", tmp_path / "mmv_s3d.pkl", "--out", under_a_file],
        ["deflate", "--model", model_dir, "--images", tmp_path, "--out", under_a_file, "--no-progress"],
        ["prepare", tmp_path, "--out", under_a_file],
        ["index", clip, "--model", model_dir, "--out", under_a_file, "--no-progress"],
        ["train", "--config", CONFIGS / "synthetic_tiny.yaml", "--out", under_a_file],
        ["demo-data", "--out", under_a_file],
        ["eval", "video-folder", "--model", model_dir, "--data", tmp_path, "--out", under_a_file],
    ]
    (tmp_path / "mmv_s3d.pkl").write_bytes(b"\x80\x04")
    for command in commands:
        assert_one_line_error(run_mmv(*command), 1, "a_file is a file, not a folder")
    # A folder where a file is expected (the output of mmv vocab, the checkpoint of mmv convert, --vocab, --word2vec).
    assert_one_line_error(run_mmv("vocab", tmp_path / "corpus.txt", "--out", tmp_path / "folder"), 1,
                          "folder: is a folder; --out needs a file name")
    assert_one_line_error(run_mmv("convert", tmp_path / "folder", "--out", tmp_path / "m"), 1, "folder: is a folder")
    assert_one_line_error(run_mmv("vocab", "recover", model_dir, "--word2vec", tmp_path / "folder", "--out",
                                  tmp_path / "v.json"), 1, "folder: is a folder; --word2vec needs a file")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "corpus.txt", "folder", "mmv_s3d.pkl"]
    assert (tmp_path / "a_file").read_text() == "x" and not any((tmp_path / "folder").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the permissions say (CI runs as root)")
def test_an_output_folder_without_write_permission(tmp_path, clip, model_dir):
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "corpus.txt").write_text("cut the onions\n")
    locked.chmod(0o555)
    try:
        for command in (["vocab", tmp_path / "corpus.txt", "--out", locked / "v.txt", "--no-progress"],
                        ["embed", clip, "--model", model_dir, "--modality", "video", "--out", locked / "emb",
                         "--no-progress"],
                        ["deflate", "--model", model_dir, "--images", tmp_path, "--out", locked / "m"]):
            assert_one_line_error(run_mmv(*command), 1, "no permission to write in", str(locked))
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o755)


def test_no_write_permission_is_named_as_root_sees_it(tmp_path, monkeypatch, capsys):
    """The same check where os.access says no, so that it also runs as root (in-process; the test above needs a user
    whom permissions stop)."""
    from mmv.cli.main import main

    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "corpus.txt").write_text("cut the onions\n")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))
    assert main(["vocab", str(tmp_path / "corpus.txt"), "--out", str(locked / "sub" / "v.txt"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"mmv vocab: error: {locked / 'sub' / 'v.txt'}: no permission to write in {locked}" in err
    assert not any(locked.iterdir())


def test_bad_options_exit_2_before_anything_is_written(tmp_path, clip, model_dir):
    out = tmp_path / "out"
    (tmp_path / "q.txt").write_text("hello\n")
    cases = [
        (["embed", clip, "--model", model_dir, "--modality", "video", "--windows", "many", "--out", out], "--windows"),
        (["embed", clip, "--model", model_dir, "--modality", "image", "--out", out], "deflated model"),
        (["deflate", "--model", model_dir, "--images", tmp_path, "--epochs", "0", "--out", out], "--epochs"),
        # Refused by name before the pickle (absent here) would be read.
        (["convert", tmp_path / "absent.pkl", "--arch", "nope", "--out", out], "--arch nope: unknown architecture"),
        (["convert", tmp_path / "absent.pkl"], "--out"),
        (["train", "--config", CONFIGS / "synthetic_tiny.yaml", "model.name=nope", "--out", out], "model.name"),
        (["train", "--config", CONFIGS / "synthetic_tiny.yaml", "run.stepz=3", "--out", out], "run.stepz"),
        (["vocab", tmp_path / "q.txt", "--out", out / "v.txt", "--max-size", "1"], "--max-size"),
        (["vocab", tmp_path / "q.txt", "--out", out / "v.txt", "--word2vec", tmp_path / "q.txt"], "recover"),
        (["transcribe", tmp_path, "--workers", "0"], "--workers"),
        (["transcribe", tmp_path, "--language", "en"], "--language"),
        (["prepare", tmp_path, "--out", out, "--shard-size", "0"], "--shard-size"),
        (["index", clip, "--model", model_dir, "--out", out, "--shard", "5/2"], "--shard"),
        (["search", tmp_path, "a sentence", "--audio", clip], "either a sentence"),
        (["info"], "--model"),
        (["demo", "--steps", "0", "--out", out], "--steps"),
    ]
    for command, fragment in cases:
        assert_one_line_error(run_mmv(*command), 2, fragment)
    assert not out.exists() and not list(tmp_path.glob("*.vtt"))


def test_runs_that_produce_nothing_exit_1_after_their_report(tmp_path, model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("\n\n")
    (empty / "stop_words.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nthe and of\n")
    result = run_mmv("vocab", empty, "--out", tmp_path / "v.txt", "--no-progress")
    assert_one_line_error(result, 1, "no word in", "nothing written")
    assert json.loads(result.stdout.strip().splitlines()[-1])["files"] == 2  # the report came first
    assert not (tmp_path / "v.txt").exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (broken / name).write_bytes(BROKEN_MP4)
    (broken / "c.png").write_bytes(b"not an image")
    result = run_mmv("prepare", broken, "--out", tmp_path / "shards", "--no-progress")
    assert_one_line_error(result, 1, "none of the 2 videos could be packed")
    assert json.loads(result.stdout.strip().splitlines()[-1])["num_samples"] == 0
    assert not list((tmp_path / "shards").glob("*.tar"))
    result = run_mmv("deflate", "--model", model_dir, "--images", broken, "--out", tmp_path / "m", "--no-progress")
    assert_one_line_error(result, 1, "no readable image")
    assert not (tmp_path / "m").exists()


def test_transcribe_of_0_of_n_files_exits_1(tmp_path):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (optional extra 'asr')")
    for name in ("a.mp4", "b.mp4", "c.wav"):
        (tmp_path / name).write_bytes(BROKEN_MP4)
    result = run_mmv("transcribe", tmp_path, "--no-progress")
    assert_one_line_error(result, 1, "none of the 3 files could be transcribed")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["files"], summary["transcribed"], summary["failed"]) == (3, 0, 3)
    assert not list(tmp_path.glob("*.vtt"))


def test_transcribe_takes_files_and_sees_captions_named_as_yt_dlp_does(tmp_path):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (optional extra 'asr')")
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    captions = "WEBVTT\n\n00:01.000 --> 00:02.000\nhello\n"
    for name in ("talk.mp4", "sub/deep.mp4", "lecture.webm"):
        (folder / name).write_bytes(BROKEN_MP4)  # never decoded: each already has captions
    (folder / "talk.en.vtt").write_text(captions)
    (folder / "sub" / "deep.en-orig.vtt").write_text(captions)
    (folder / "lecture.vtt").write_text(captions)
    # A folder (searched recursively), one file, a folder without its sub-folders.
    for paths, found in (([folder], 3), ([folder / "talk.mp4"], 1), ([folder, "--no-recursive"], 2)):
        result = run_mmv("transcribe", *paths, "--no-progress")
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert (summary["files"], summary["skipped_existing"], summary["failed"]) == (found, found, 0)
    assert not (folder / "talk.vtt").exists() and not (folder / "sub" / "deep.vtt").exists()
    # --model was the speech model here; it still is, with a warning (--model is the MMV model everywhere else).
    result = run_mmv("transcribe", folder / "talk.mp4", "--overwrite", "--model", tmp_path / "no_model")
    assert_one_line_error(result, 1, "no_model")
    assert "mmv transcribe: warning: --model is deprecated; use --asr-model" in result.stderr


def test_deflate_counts_the_images_it_used_and_keeps_no_worse_model(tmp_path, model_dir):
    from eval_fixtures import write_image

    images = tmp_path / "images"
    for i in range(3):
        write_image(images / f"{i}.png", i, seed=i)
    (images / "broken.png").write_bytes(b"not an image")
    flags = ["--model", model_dir, "--images", images, "--static-frames", "4", "--image-size", "32",
             "--image-crop", "32", "--epochs", "1", "--no-progress"]
    # Random weights: the visual outputs are all close to 0, so the naive L1 is already about 0 and training can only
    # move away from it; the command refuses to save that unless --force.
    result = run_mmv("deflate", *flags, "--out", tmp_path / "refused")
    assert_one_line_error(result, 1, "do not lower the mean L1", "nothing written", "--force")
    assert "on 3 images" in result.stdout and not (tmp_path / "refused").exists()
    result = run_mmv("deflate", *flags, "--out", tmp_path / "forced", "--force")
    assert result.returncode == 0 and "mmv deflate: warning: " in result.stderr, result.stderr[-2000:]
    deflation = json.loads((tmp_path / "forced" / "config.json").read_text())["deflation"]
    assert deflation["num_images"] == 3 and deflation["skipped"]["total"] == 1
    assert deflation["config"]["num_frames"] == 4 and deflation["config"]["crop"] == 32
