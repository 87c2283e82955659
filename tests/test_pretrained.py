"""Released models by name (``mmv.load("mmv_s3d")``, ``mmv download``), against a local HTTP server.

The server (``release_server.ReleaseServer``, on 127.0.0.1 only) serves a released-format S3D-G pickle rebuilt from
the official reference rule, as the parity tests build it; ``MMV_RELEASE_URL`` points at it and ``MMV_HOME`` at a
temporary folder. No test reaches any other address.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mmv
from mmv import pretrained
from mmv.cli.main import main as cli_main
from mmv.pretrained import DownloadError, ResumableDownloader
from child_process import restore_ctrl_c
from official_params import io_path, make_official_params, tree_path
from release_server import ReleaseServer, closed_port_url
from released_pickle import write_released_checkpoint

NAME = "mmv_s3d"
OUTPUTS = ("vid_repr", "aud_repr", "vid_embd_toaud", "vid_embd_totxt", "aud_embd_tovid", "aud_embd_totxt",
           "txt_embd_tovid", "txt_embd_toaud")
REL_TOL = 1e-4  # as tests/test_parity.py: max abs error <= 1e-4 x max |reference|
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> bytes:
    """The bytes of ``mmv_s3d.pkl`` in the released format, rebuilt from the reference rule (153 MB)."""
    params, state = make_official_params(tree_path("s3d"))
    path = write_released_checkpoint(params, state, tmp_path_factory.mktemp("release") / f"{NAME}.pkl")
    return path.read_bytes()


@pytest.fixture(scope="module")
def converted_entry(release, tmp_path_factory) -> Path:
    """A cache entry made once from the file (``fetch(source=...)``), for tests that start from a full cache."""
    home = tmp_path_factory.mktemp("home")
    pkl = tmp_path_factory.mktemp("by_hand") / f"{NAME}.pkl"
    pkl.write_bytes(release)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMV_HOME", str(home))
        return pretrained.fetch(NAME, source=pkl, progress=False)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MMV_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(ResumableDownloader, "retry_wait_s", 0.05)
    return tmp_path / "cache"


@pytest.fixture
def server(release, monkeypatch):
    with ReleaseServer({f"/releases/{NAME}.pkl": release}) as server:
        monkeypatch.setenv("MMV_RELEASE_URL", server.url + "/releases/")
        yield server


def leftovers(home: Path) -> list[str]:
    """Everything in the cache folder but complete entries and lock files."""
    found = [p.relative_to(home).as_posix() for p in home.rglob("*")] if home.exists() else []
    return sorted(p for p in found if not p.startswith(f"{NAME}/") and p != NAME and not p.endswith(".lock")
                  and p != "downloads")


def error_lines(stderr: str) -> list[str]:
    """The error lines of ``mmv download`` on stderr (the rest is the progress bar and its notes), checking that
    there is no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("mmv download:")]


def assert_matches_reference(model) -> None:
    io = np.load(io_path("s3d"))
    with torch.inference_mode():
        out = model(video=torch.from_numpy(io["video"]), audio=torch.from_numpy(io["audio"]),
                    word_ids=torch.from_numpy(io["word_ids"]))
    for key in OUTPUTS:
        err = np.abs(out[key].numpy() - io[key]).max() / np.abs(io[key]).max()
        assert err <= REL_TOL, f"{key}: max abs error {err:.2e} x max|ref|"


def test_first_load_downloads_converts_and_later_loads_need_no_server(home, server, release, capsys) -> None:
    model = mmv.load(NAME)
    assert [(r.path, r.range) for r in server.requests] == [(f"/releases/{NAME}.pkl", None)]
    assert_matches_reference(model)
    assert model.preprocess.source == "released" and model.preprocess.text.vocabulary is None
    record = json.loads((home / NAME / "release.json").read_text())
    assert record["sha256"] == hashlib.sha256(release).hexdigest() and record["bytes"] == len(release)
    assert record["url"] == f"{server.url}/releases/{NAME}.pkl" and record["licence"] == "CC BY-NC 4.0"
    assert leftovers(home) == []  # no pickle, part or temporary folder left
    assert capsys.readouterr().err.count("CC BY-NC 4.0") == 1  # the licence, once, on the first download

    server.stop()
    again = mmv.load(NAME)  # from the cache; the server is gone
    assert torch.equal(again.text_backbone.embed.weight, model.text_backbone.embed.weight)
    assert cli_main(["download", NAME]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(home / NAME) and "CC BY-NC" not in err
    assert len(server.requests) == 1


def test_interrupted_download_resumes_across_processes_and_within_one(home, server, release) -> None:
    """Ctrl-C in the middle keeps the part; the next call asks for the rest (Range), is cut off again mid-file, and
    resumes again; the result is the file, byte for byte, and converts."""
    server.stall_at = len(release) * 2 // 5
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = f"from mmv.pretrained import fetch; fetch({NAME!r}, progress=False)"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=restore_ctrl_c)
    part = home / "downloads" / f"{NAME}.pkl.part"
    deadline = time.monotonic() + 60
    while not (server.stalled.is_set() and part.is_file() and part.stat().st_size > 0):
        assert time.monotonic() < deadline and child.poll() is None, child.stderr.read() if child.poll() else ""
        time.sleep(0.05)
    time.sleep(0.3)  # let the child write what it has received
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=300)  # generous: CI machines may be slow and busy
    assert child.returncode != 0 and not (home / NAME).exists()
    kept = part.stat().st_size
    assert 0 < kept <= server.stall_at

    server.release.set()  # the stalled connection (its client is gone) may end
    server.stall_at, server.release = None, threading.Event()
    server.cuts = [len(release) * 4 // 5]
    server.requests.clear()
    path = pretrained.fetch(NAME, progress=False)
    ranges = [r.range for r in server.requests]
    assert ranges[0] == f"bytes={kept}-" and len(ranges) == 2 and ranges[1].startswith("bytes=")
    assert int(ranges[1][len("bytes="):-1]) > len(release) * 3 // 5  # resumed near the cut, not from the start
    assert json.loads((path / "release.json").read_text())["sha256"] == hashlib.sha256(release).hexdigest()
    assert leftovers(home) == []


def test_truncated_download_is_refused_and_leaves_nothing(home, server, release, capsys) -> None:
    server.truncate_at = len(release) * 3 // 5  # announces the whole file, sends 60 %, closes; resuming gets nothing
    with pytest.raises(DownloadError) as caught:
        mmv.load(NAME)
    message = str(caught.value)
    assert "\n" not in message and "truncated download" in message and f"of the {len(release)}" in message
    assert "mmv convert" in message and f"mmv download {NAME} --from" in message
    assert leftovers(home) == [] and not (home / NAME).exists()
    assert sum(r.range is not None for r in server.requests) == ResumableDownloader.attempts_without_progress

    assert cli_main(["download", NAME]) == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("mmv download: error: mmv_s3d: cannot download"), err


@pytest.mark.parametrize("status", [500, 404])
def test_server_error_is_one_line(home, server, status, capsys) -> None:
    server.status = status
    assert cli_main(["download", NAME]) == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and f"the server answered {status}" in err[0] and "mmv convert" in err[0], err
    assert leftovers(home) == [] and not (home / NAME).exists()


def test_no_network_is_one_line(home, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MMV_RELEASE_URL", closed_port_url())
    assert cli_main(["download", NAME]) == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "cannot connect to 127.0.0.1" in err[0] and "mmv convert" in err[0], err
    assert leftovers(home) == []


def test_corrupt_download_is_refused_by_the_safe_reader(home, server, release) -> None:
    server.files[f"/releases/{NAME}.pkl"] = b"\x80\x04" + os.urandom(5000)  # a pickle header, then noise
    with pytest.raises(DownloadError, match=r"is not a valid mmv_s3d release.*nothing was cached.*mmv convert"):
        pretrained.fetch(NAME, progress=False)
    assert leftovers(home) == [] and not (home / NAME).exists()


def test_unknown_names_list_the_released_ones(home, capsys) -> None:
    with pytest.raises(FileNotFoundError, match="mmv_s3d, mmv_tsm_resnet_x1, mmv_tsm_resnet_x2"):
        mmv.load("mmv_s3dd")
    assert cli_main(["download", "mmv_s3dd"]) == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "mmv_s3d, mmv_tsm_resnet_x1, mmv_tsm_resnet_x2" in err[0]
    assert not home.exists()


def test_a_local_path_wins_over_a_name(tmp_path, monkeypatch, home) -> None:
    monkeypatch.chdir(tmp_path)
    mmv.save(mmv.create_model("mmv_tiny_s3dg"), tmp_path / NAME)
    assert mmv.load(NAME).cfg.video_backbone == "s3dg" and not home.exists()  # read as a path, nothing fetched


def test_damaged_cache_and_a_changed_release_are_refused(home, converted_entry, server, release) -> None:
    import shutil

    shutil.copytree(converted_entry, home / NAME)
    weights = home / NAME / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"cache is damaged.*mmv download {NAME} --force"):
        mmv.load(NAME)
    assert server.requests == []  # a damaged cache is reported, never silently downloaded again

    # --force downloads again; a file other than the first download is refused and the entry stays as it was.
    server.files[f"/releases/{NAME}.pkl"] = release[:-1] + bytes([release[-1] ^ 1])
    with pytest.raises(DownloadError, match="but the first download had"):
        pretrained.fetch(NAME, force=True, progress=False)
    assert weights.read_bytes() == bytes(data) and [r.range for r in server.requests] == [None]
    assert leftovers(home) == []


def test_two_processes_loading_the_same_name(home, server, release) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = ("import mmv, hashlib; m = mmv.load('mmv_s3d'); "
            "print(hashlib.sha256(m.text_backbone.embed.weight.detach().numpy().tobytes()).hexdigest())")
    children = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    results = [child.communicate(timeout=300) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err
    assert len({out.strip() for out, _ in results}) == 1  # both loaded the same weights
    assert sum(err.count("CC BY-NC 4.0") for _, err in results) == 1
    assert [r.range for r in server.requests] == [None]  # downloaded once: the second process waited, then reused
    record = json.loads((home / NAME / "release.json").read_text())
    assert record["sha256"] == hashlib.sha256(release).hexdigest()
    assert record["weights_sha256"] == hashlib.sha256((home / NAME / "model.safetensors").read_bytes()).hexdigest()
    assert leftovers(home) == []


def test_cache_folder_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("MMV_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert pretrained.mmv_home() == tmp_path / "xdg" / "mmv"
    monkeypatch.setenv("MMV_HOME", str(tmp_path / "mine"))
    assert pretrained.mmv_home() == tmp_path / "mine"
    monkeypatch.delenv("MMV_RELEASE_URL", raising=False)
    assert pretrained.release_url(NAME) == f"https://storage.googleapis.com/deepmind-research-mmv/{NAME}.pkl"


def test_a_local_folder_as_release_url(tmp_path) -> None:
    """``MMV_RELEASE_URL`` may name a folder (air-gapped sites): the downloader copies the file (a path or file://)."""
    data = os.urandom(300_000)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / f"{NAME}.pkl").write_bytes(data)
    downloader = ResumableDownloader(tmp_path / "part", progress=False)
    for base in (str(tmp_path / "mirror"), (tmp_path / "mirror").as_uri()):
        out = tmp_path / "out.pkl"
        downloader(f"{base}/{NAME}.pkl", str(out))
        assert out.read_bytes() == data and not (tmp_path / "part").exists()
    with pytest.raises(DownloadError, match="no such file"):
        downloader(str(tmp_path / "mirror" / "mmv_tsm_resnet_x1.pkl"), str(tmp_path / "other.pkl"))
