"""The feature cache, model checksums and result reports shared by every protocol."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from mmv.atomic import atomic_save_npz, atomic_write_json, atomic_write_text, to_json

logger = logging.getLogger(__name__)


def model_checksum(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over parameter/buffer names, shapes, dtypes and values.

    Two models with equal weights share cached features; any weight change invalidates them. The result is stored
    on the module (``_mmv_checksum``) because hashing a large model takes a noticeable fraction of a second; call
    :func:`forget_checksum` after changing weights in place.
    """
    cached = getattr(model, "_mmv_checksum", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        shape = tuple(tensor.shape)
        tensor = tensor.detach().cpu().contiguous().reshape(-1)  # 1-D: 0-d tensors cannot be viewed as bytes
        digest.update(f"{name}:{shape}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    value = digest.hexdigest()[:16]
    model._mmv_checksum = value  # type: ignore[attr-defined]
    return value


def forget_checksum(model: torch.nn.Module) -> None:
    """Drops the stored checksum after weights changed in place (e.g. deflation BN training)."""
    if hasattr(model, "_mmv_checksum"):
        del model._mmv_checksum


def options_key(options: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able options dict (sorted keys)."""
    return hashlib.sha256(to_json(options, indent=None, sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """Caches arrays in ``<dir>/<name>-<hash(model checksum, options)>.npz``.

    Args:
        directory: where cache files live; None disables caching.
        model_key: the model's checksum (:func:`model_checksum`).
    """

    def __init__(self, directory: str | Path | None, model_key: str) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.model_key = model_key

    def path(self, name: str, options: Mapping[str, Any]) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{name}-{options_key({'model': self.model_key, **options})}.npz"

    def load(self, name: str, options: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        path = self.path(name, options)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as err:  # a damaged cache file is recomputed, not fatal
            logger.warning("ignoring unreadable cache file %s (%s)", path, err)
            return None
        logger.info("loaded cached features %s", path.name)
        return arrays

    def save(self, name: str, options: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        path = self.path(name, options)
        if path is not None:
            atomic_save_npz(path, **arrays)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats printed with 2 decimals."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out_dir: str | Path, name: str, result: Mapping[str, Any], table: str) -> tuple[Path, Path]:
    """Writes ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md`` atomically and returns their paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    atomic_write_json(json_path, result)
    atomic_write_text(md_path, table.rstrip() + "\n")
    return json_path, md_path


def resolve_model(spec: str, device: str = "cpu") -> torch.nn.Module:
    """A saved model (directory or ``.safetensors``), a released model by name (``mmv_s3d``: downloaded once and
    cached, see :mod:`mmv.pretrained`) or, failing both, a registered architecture name.

    A registered name gives randomly initialised weights, which is useful only for smoke tests.
    """
    import mmv
    from mmv.pretrained import is_released, list_released

    if Path(spec).exists() or is_released(spec):
        return mmv.load(spec, map_location=device).eval()
    if spec in mmv.list_models():
        logger.warning("%s is an architecture name: evaluating RANDOM weights (give a saved model path)", spec)
        return mmv.create_model(spec).to(device).eval()
    raise FileNotFoundError(f"{spec}: neither a saved model, a released model ({', '.join(list_released())}) nor a "
                            "registered architecture (see 'mmv info --list')")


def load_tokenizer(vocab: str | Path | None, max_words: int = 16) -> Any:
    """A callable ``list[str] -> [N, max_words] int64 word ids`` from a vocabulary file (``mmv vocab``), or None.

    Tokenisation is :class:`mmv.data.tokenizer.Tokenizer`'s (lower case, punctuation and stop words removed,
    ``max_words`` = 16 as in the paper).
    """
    if vocab is None:
        return None
    from mmv.data.tokenizer import Tokenizer, Vocabulary

    return Tokenizer(Vocabulary.load(vocab), max_words=max_words).encode_batch
