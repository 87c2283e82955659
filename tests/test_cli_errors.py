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

from eval_fixtures import class_frames, write_video

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
    evil = tmp_path / "mmv_s3d.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle that would run a command
    result = run_mmv("convert", evil, tmp_path / "out")
    assert_one_line_error(result, 1, "mmv_s3d.pkl")
    assert "pwned" not in result.stdout and not (tmp_path / "out").exists()


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
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
