"""Training checkpoints: optimizer state without pickle, RNG states as JSON, atomic directories, pruning, lookup."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open

import mmv
from mmv.train import checkpoint as ckpt


def _adam_after_steps(model: torch.nn.Module, steps: int = 3) -> torch.optim.Adam:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=1e-4)
    for _ in range(steps):
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    model = _model()
    optimizer = _adam_after_steps(model)
    names = [name for name, _ in model.named_parameters()]
    ckpt.save_optimizer(optimizer, names, tmp_path / "optimizer.safetensors")
    with safe_open(str(tmp_path / "optimizer.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["optimizer"])  # the non-tensor part is plain JSON
    assert meta["param_names"] == names and meta["param_groups"][0]["betas"] == [0.8, 0.95]

    fresh = torch.optim.Adam(model.parameters(), lr=1.0)
    ckpt.load_optimizer(fresh, names, tmp_path / "optimizer.safetensors")
    want, got = optimizer.state_dict(), fresh.state_dict()
    assert got["param_groups"] == want["param_groups"]  # betas back as a tuple, lr restored
    assert want["state"].keys() == got["state"].keys()
    for index, values in want["state"].items():
        for key, value in values.items():
            assert torch.equal(got["state"][index][key], value), (index, key)

    # The restored optimizer takes the same next step as the original.
    twin = _model()
    twin.load_state_dict(model.state_dict())
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1.0)
    ckpt.load_optimizer(twin_optimizer, names, tmp_path / "optimizer.safetensors")
    x = torch.randn(5, 4)
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        m(x).square().sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_optimizer_state_for_other_parameters_is_refused(tmp_path):
    model = _model()
    optimizer = _adam_after_steps(model)
    names = [name for name, _ in model.named_parameters()]
    ckpt.save_optimizer(optimizer, names, tmp_path / "o.safetensors")
    with pytest.raises(ValueError, match="other parameters"):
        ckpt.load_optimizer(torch.optim.Adam(model.parameters()), [n + "x" for n in names], tmp_path / "o.safetensors")
    with pytest.raises(ValueError, match="Adam optimizer"):
        ckpt.load_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), names, tmp_path / "o.safetensors")


def test_rng_states_survive_json():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.rand(3), np.random.rand(3), random.random(), np.random.randn()  # a cached Gaussian in numpy's state
    state = json.loads(json.dumps(ckpt.capture_rng_state()))
    want = (torch.rand(4), np.random.randn(4), random.gauss(0, 1))
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    ckpt.restore_rng_state(state)
    got = (torch.rand(4), np.random.randn(4), random.gauss(0, 1))
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return mmv.create_model("mmv_tiny_s3dg")


def _save(run_dir, step, model, keep_last=2):
    optimizer = torch.optim.Adam(model.parameters())
    names = [name for name, _ in model.named_parameters()]
    return ckpt.save_checkpoint(run_dir, step, model, optimizer, names, {"step": step}, keep_last)


def test_checkpoint_directory_latest_and_pruning(tmp_path, tiny_model):
    model = tiny_model
    for step in (10, 20, 30):
        path = _save(tmp_path, step, model)
    assert path == tmp_path / "ckpt_30"
    assert (tmp_path / "latest").read_text().strip() == "ckpt_30"
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [20, 30]  # keep_last=2
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "optimizer.safetensors",
                                                     "trainer_state.json"]
    loaded = mmv.load(path)  # the evaluation side reads a training checkpoint directly
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    # Saving the same step again replaces it.
    _save(tmp_path, 30, model)
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [20, 30]


def test_resume_lookup(tmp_path, tiny_model):
    assert ckpt.resolve_resume("", tmp_path) is None
    assert ckpt.resolve_resume("auto", tmp_path) is None  # nothing yet: a new run
    _save(tmp_path, 5, tiny_model)
    _save(tmp_path, 7, tiny_model)
    assert ckpt.resolve_resume("auto", tmp_path) == tmp_path / "ckpt_7"
    assert ckpt.resolve_resume(str(tmp_path / "ckpt_5"), "elsewhere") == tmp_path / "ckpt_5"
    assert ckpt.resolve_resume(str(tmp_path), "elsewhere") == tmp_path / "ckpt_7"  # a run directory
    # A stale pointer (its checkpoint deleted by hand) falls back to the highest complete step.
    (tmp_path / "latest").write_text("ckpt_99\n")
    assert ckpt.find_latest(tmp_path) == tmp_path / "ckpt_7"
    # An incomplete directory (no trainer_state.json) is not a checkpoint.
    (tmp_path / "ckpt_8").mkdir()
    assert ckpt.find_latest(tmp_path) == tmp_path / "ckpt_7"
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "ckpt_8"), tmp_path)


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".tmp_ckpt_4_abc").mkdir()
    (tmp_path / ".tmp_ckpt_4_abc" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".latest.x1y2.tmp").write_text("ckpt_4")
    (tmp_path / "notes.txt").write_text("kept")
    ckpt.remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
