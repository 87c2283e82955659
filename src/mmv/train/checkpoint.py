"""Training checkpoints: one directory per checkpoint, written atomically, enough to continue a run exactly.

Layout of ``RUN_DIR/ckpt_<step>/``:

* ``model.safetensors`` + ``config.json``: the model in the library's format (:func:`mmv.save`), so
  ``mmv.load("RUN_DIR/ckpt_<step>")`` gives the trained model for evaluation;
* ``optimizer.safetensors``: every tensor of the optimizer state (``state/<param index>/<name>``), with the
  non-tensor parts (param groups, parameter names, scalar state) as JSON in the file's metadata;
* ``trainer_state.json``: step, samples seen, non-finite counters, the data sampler's state, the RNG states of
  torch, numpy and Python of every rank, and the full training config.

Nothing is pickled. A checkpoint is first written to a hidden temporary directory, then renamed into place, and
``RUN_DIR/latest`` (the name of the newest checkpoint) is replaced atomically after it: a run killed at any moment
leaves either the previous checkpoint or the new one, never a partial one.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mmv.atomic import atomic_save_safetensors, atomic_write_bytes

__all__ = [
    "CHECKPOINT_PREFIX",
    "capture_rng_state",
    "find_latest",
    "list_checkpoints",
    "load_optimizer",
    "read_trainer_state",
    "resolve_resume",
    "restore_rng_state",
    "remove_stale_temporaries",
    "save_checkpoint",
    "save_optimizer",
]

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "ckpt_"
LATEST_NAME = "latest"
OPTIMIZER_NAME = "optimizer.safetensors"
TRAINER_STATE_NAME = "trainer_state.json"
_TMP_PREFIX = ".tmp_ckpt_"
_CKPT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


# ----------------------------------------------------------------------------------------------------------------
# RNG states as JSON
# ----------------------------------------------------------------------------------------------------------------

def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict[str, Any]:
    """This process's torch (CPU and CUDA), numpy and Python RNG states, as JSON-serialisable data."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": _b64(torch.get_rng_state()),
        "numpy": {"name": np_state[0], "keys": np_state[1].tolist(), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`capture_rng_state` captured."""
    torch.set_rng_state(_unb64(state["torch"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np.asarray(np_state["keys"], dtype=np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [_unb64(s) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            log.warning("the checkpoint holds CUDA RNG states for %d devices, this process sees %d: not restored",
                        len(cuda_states), torch.cuda.device_count())


# ----------------------------------------------------------------------------------------------------------------
# Optimizer state without pickle
# ----------------------------------------------------------------------------------------------------------------

def save_optimizer(optimizer: torch.optim.Optimizer, param_names: list[str], path: str | os.PathLike) -> None:
    """Writes ``optimizer.state_dict()`` as safetensors (tensors) plus JSON metadata (everything else).

    Args:
        optimizer: Any torch optimizer whose state values are tensors or JSON scalars (Adam, AdamW, SGD...).
        param_names: Names of the optimized parameters in the optimizer's order; stored to check them on load.
        path: The ``.safetensors`` file.
    """
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
              for group in state_dict["param_groups"]]
    tuple_keys = sorted({k for group in state_dict["param_groups"] for k, v in group.items() if isinstance(v, tuple)})
    meta = {"format": "mmv-optimizer", "type": type(optimizer).__name__, "param_groups": groups,
            "tuple_keys": tuple_keys, "param_names": param_names, "scalar_state": scalars}
    atomic_save_safetensors(tensors, path, metadata={"optimizer": json.dumps(meta)})


def load_optimizer(optimizer: torch.optim.Optimizer, param_names: list[str], path: str | os.PathLike) -> None:
    """Loads what :func:`save_optimizer` wrote into ``optimizer`` (whose parameters must be the same, in order).

    Raises:
        ValueError: The file is not an optimizer state, or was written for other parameters or another optimizer.
    """
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "optimizer" not in metadata:
        raise ValueError(f"{path}: not an optimizer state written by mmv (no 'optimizer' metadata)")
    meta = json.loads(metadata["optimizer"])
    if meta["type"] != type(optimizer).__name__:
        raise ValueError(f"{path}: state of a {meta['type']} optimizer, this run uses {type(optimizer).__name__}")
    if meta["param_names"] != param_names:
        missing = sorted(set(param_names) - set(meta["param_names"]))[:5]
        extra = sorted(set(meta["param_names"]) - set(param_names))[:5]
        raise ValueError(f"{path}: optimizer state for other parameters (missing here: {missing}, not in this model: "
                         f"{extra}); was the model config changed?")
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in load_file(str(path)).items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in meta["scalar_state"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: (tuple(v) if k in meta["tuple_keys"] else v) for k, v in group.items()}
              for group in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint directories
# ----------------------------------------------------------------------------------------------------------------

def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the complete checkpoints in ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for child in run_dir.iterdir():
        match = _CKPT_RE.match(child.name)
        if match and child.is_dir() and (child / TRAINER_STATE_NAME).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def find_latest(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``run_dir/latest`` (or, if that is missing or stale, the highest step), or None."""
    run_dir = Path(run_dir)
    pointer = run_dir / LATEST_NAME
    if pointer.is_file():
        candidate = run_dir / pointer.read_text().strip()
        if (candidate / TRAINER_STATE_NAME).is_file():
            return candidate
        log.warning("%s names %s, which is not a complete checkpoint; using the highest step instead", pointer,
                    candidate.name)
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][1] if checkpoints else None


def resolve_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint directory to resume from: None for ``""``; ``auto``: the run's latest (None if none yet).

    Raises:
        FileNotFoundError: An explicit path that is not a checkpoint directory.
    """
    if not resume:
        return None
    if resume == "auto":
        return find_latest(run_dir)
    path = Path(resume)
    if path.is_dir() and not (path / TRAINER_STATE_NAME).is_file():
        latest = find_latest(path)  # a run directory was given: take its latest checkpoint
        if latest is not None:
            return latest
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint (expected a ckpt_<step> directory with "
                                f"{TRAINER_STATE_NAME}, or a run directory that has one)")
    return path


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint directory."""
    file = Path(path) / TRAINER_STATE_NAME
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: missing; {path} is not a training checkpoint") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: invalid JSON ({err})") from None


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    param_names: list[str],
    trainer_state: dict[str, Any],
    keep_last: int,
    *,
    config_key: str = "train_config",
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Writes ``run_dir/ckpt_<step>`` atomically, points ``run_dir/latest`` at it and prunes old checkpoints.

    Call on one process only (rank 0); ``trainer_state`` must already hold every rank's RNG states.

    Args:
        run_dir: The run directory.
        step: Optimizer steps done; names the checkpoint.
        model: The bare :class:`mmv.MMV` (not wrapped by DDP or ``torch.compile``).
        optimizer: The optimizer.
        param_names: Names of the optimized parameters, in the optimizer's order.
        trainer_state: JSON-serialisable loop state (see the module doc).
        keep_last: Keep this many newest checkpoints (the new one included).
        config_key: Where the saved model's metadata holds ``trainer_state["config"]`` (``mmv finetune``:
            ``"finetune"``).
        extra_tensors: More safetensors files for the checkpoint, ``{file name: tensors}`` (``mmv finetune``'s
            classifier).

    Returns:
        The checkpoint directory.
    """
    from mmv.checkpoint import save as save_model

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{step}_", dir=run_dir))
    try:
        save_model(model, tmp, extra={"step": step, config_key: trainer_state.get("config")})
        for name, tensors in (extra_tensors or {}).items():
            atomic_save_safetensors({k: v.detach().contiguous() for k, v in tensors.items()}, tmp / name)
        save_optimizer(optimizer, param_names, tmp / OPTIMIZER_NAME)
        atomic_write_bytes(tmp / TRAINER_STATE_NAME, (json.dumps(trainer_state) + "\n").encode())
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. the end of a run that had just checkpointed)
            old = run_dir / f"{_TMP_PREFIX}old_{step}_{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(run_dir / LATEST_NAME, (final.name + "\n").encode())
    _prune(run_dir, keep_last, keep=final)
    return final


def remove_stale_temporaries(run_dir: str | os.PathLike) -> None:
    """Deletes the temporary checkpoint directories and files left by a run killed while writing them."""
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        for child in run_dir.iterdir():
            if child.name.startswith(_TMP_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            elif child.name.startswith(".") and child.name.endswith(".tmp") and child.is_file():
                child.unlink(missing_ok=True)  # from atomic_write_bytes (the latest pointer, config.yaml)


def _prune(run_dir: Path, keep_last: int, keep: Path) -> None:
    checkpoints = list_checkpoints(run_dir)
    for _, path in checkpoints[:max(0, len(checkpoints) - keep_last)]:
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Makes a rename inside ``path`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
