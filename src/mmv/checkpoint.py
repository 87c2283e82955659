"""Our model format: safetensors weights plus a JSON config that fully describes the architecture.

Two equivalent forms, both read by :func:`load`:

* a directory with ``model.safetensors`` and ``config.json`` (what ``mmv convert`` and ``mmv train`` write);
* a single ``.safetensors`` file whose metadata holds the same JSON under the key ``"mmv"``.

Nothing is unpickled: safetensors stores raw tensors, the config is JSON.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from . import __version__
from .atomic import atomic_save_safetensors, atomic_write_bytes
from .models.mmv import MMV, MMVConfig, deflate

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


def model_description(model: MMV, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON stored with the weights."""
    return {
        "format": "mmv",
        "format_version": FORMAT_VERSION,
        "mmv_version": __version__,
        "config": model.cfg.to_dict(),
        "deflated": model.deflated,
        **(extra or {}),
    }


def save(model: MMV, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Saves ``model`` to a directory (``model.safetensors`` + ``config.json``) or to one ``.safetensors`` file.

    ``extra`` (JSON-serialisable) is stored beside the config, e.g. the source checkpoint or the vocabulary path.
    Files are written atomically (temporary file, then rename).
    """
    path = Path(path)
    description = model_description(model, extra)
    if path.suffix == ".safetensors":
        atomic_save_safetensors(model.state_dict(), path, metadata={"mmv": json.dumps(description)})
        return path
    path.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(model.state_dict(), path / WEIGHTS_NAME, metadata={"mmv": json.dumps(description)})
    atomic_write_bytes(path / CONFIG_NAME, (json.dumps(description, indent=2) + "\n").encode())
    return path


def read_description(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """(the stored JSON description, the weights file) of a saved model."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or directory")
    if path.is_dir():
        weights, config = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.exists():
            raise FileNotFoundError(f"{path}: not an mmv model directory (no {WEIGHTS_NAME})")
        if config.exists():
            try:
                return json.loads(config.read_text()), weights
            except json.JSONDecodeError as err:
                raise ValueError(f"{config}: invalid JSON ({err})") from err
        path = weights
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if "mmv" not in metadata:
        raise ValueError(f"{path}: safetensors file without an mmv config (metadata key 'mmv')")
    return json.loads(metadata["mmv"]), path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> MMV:
    """Loads a model saved by :func:`save` (or written by ``mmv convert`` / ``mmv train``), in eval mode."""
    description, weights = read_description(path)
    if description.get("format") != "mmv":
        raise ValueError(f"{path}: not an mmv model description")
    model = MMV(MMVConfig.from_dict(description["config"]))
    if description.get("deflated"):
        deflate(model)
    from safetensors.torch import load_file

    state = load_file(str(weights), device=str(map_location))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights}: weights do not match the stored config; missing {result.missing_keys[:20]}, "
            f"unexpected {result.unexpected_keys[:20]}"
        )
    return model.to(map_location).eval()
