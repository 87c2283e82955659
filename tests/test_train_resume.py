"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed ends bit-identical to an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmv.train.checkpoint import find_latest, list_checkpoints, read_trainer_state

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic_tiny.yaml"
STEPS = 8


def _command(out_dir: Path, workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmv.cli.main", "train", "--config", str(CONFIG), f"run.out_dir={out_dir}",
            f"run.steps={STEPS}", "run.checkpoint_every=2", "run.keep_last=2", "run.log_every=1",
            "run.progress=false", "run.tensorboard=false", "data.datasets.0.size=40", "run.batch_size=8",
            f"data.workers={workers}", *extra]


def _env() -> dict[str, str]:
    # The same thread count in every run: float reductions must happen in the same order.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(command: list[str]) -> None:
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _kill_after_first_checkpoint(command: list[str], out_dir: Path) -> int:
    """Starts the run, SIGKILLs it as soon as a checkpoint exists; returns the step of that checkpoint."""
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while find_latest(out_dir) is None:
            assert process.poll() is None, f"the run ended before its first checkpoint: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    return int(read_trainer_state(find_latest(out_dir))["step"])


def _metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    _run(_command(uninterrupted, workers=0))
    # The interrupted run loads data with 2 worker processes: the stream must not depend on them.
    killed_at = _kill_after_first_checkpoint(_command(resumed, workers=2), resumed)
    assert 2 <= killed_at < STEPS, "the run must be killed mid-way for the test to mean anything"
    _run(_command(resumed, 2, "--resume", "auto"))

    final_a, final_b = uninterrupted / f"ckpt_{STEPS}", resumed / f"ckpt_{STEPS}"
    for name in ("model.safetensors", "optimizer.safetensors"):
        tensors_a, tensors_b = load_file(final_a / name), load_file(final_b / name)
        assert tensors_a.keys() == tensors_b.keys()
        for key in tensors_a:
            assert torch.equal(tensors_a[key], tensors_b[key]), f"{name}: {key} differs"
    state_a, state_b = read_trainer_state(final_a), read_trainer_state(final_b)
    for key in ("step", "samples_seen", "nonfinite_total"):
        assert state_a[key] == state_b[key]
    assert state_a["ranks"][0]["rng"] == state_b["ranks"][0]["rng"]
    assert state_a["ranks"][0]["data"] == state_b["ranks"][0]["data"]

    # The log holds every step once, with the same losses (rows the killed run wrote past its checkpoint are gone).
    rows_a, rows_b = _metrics(uninterrupted), _metrics(resumed)
    assert [r["step"] for r in rows_b] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    # keep_last=2, and no temporary directory survives the kill.
    assert [step for step, _ in list_checkpoints(resumed)] == [STEPS - 2, STEPS]
    assert not [p for p in resumed.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_checkpoint_per_rank_state_and_resume(tmp_path):
    out_dir = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    common = ["--config", str(CONFIG), f"run.out_dir={out_dir}", "run.batch_size=4", "run.device=cpu",
              "run.progress=false", "run.tensorboard=false", "run.log_every=1", "data.datasets.0.size=40",
              "data.num_frames=4", "data.workers=0"]
    _run([*torchrun, "-m", "mmv.cli.main", "train", *common, "run.steps=2", "run.checkpoint_every=2"])
    state = read_trainer_state(out_dir / "ckpt_2")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert state["samples_seen"] == 2 * 2 * 4  # steps x processes x clips per process
    assert state["ranks"][0]["rng"] != state["ranks"][1]["rng"]  # every rank has its own random stream
    ranks = [r["data"]["sampler"]["rank"] for r in state["ranks"]]
    assert ranks == [0, 1]

    # A launch of another size (here this single process) cannot continue the per-rank streams: refused.
    from mmv.train.config import load_config
    from mmv.train.loop import train

    cfg = load_config(CONFIG, [*common[2:], "run.resume=auto", "run.steps=4"])
    with pytest.raises(ValueError, match="written by 2 processes"):
        train(cfg)

    _run([*torchrun, "-m", "mmv.cli.main", "train", *common, "--resume", "auto", "run.steps=4"])
    rows = _metrics(out_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] is not None and r["samples_seen"] == 8 * r["step"] for r in rows)
