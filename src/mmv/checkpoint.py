"""Our model format: safetensors weights plus a JSON description of the architecture and its preprocessing.

Two equivalent forms, both read by :func:`load`:

* a folder with ``model.safetensors``, ``config.json`` and, when the model has a word vocabulary, ``vocab.json``
  (what ``mmv convert`` and ``mmv train`` write);
* a single ``.safetensors`` file whose metadata holds the same JSON under the key ``"mmv"`` (and the vocabulary
  under ``"mmv_vocabulary"``).

The description holds the architecture (``config``), the preprocessing the model expects (``preprocess``, see
:mod:`mmv.preprocess`; the vocabulary is recorded there by size and SHA-256, and checked on load), and whatever the
writer adds (``source`` for converted models, ``train_config`` and ``step`` for trained ones).

Nothing is unpickled: safetensors stores raw tensors, the description is JSON.

:func:`load` also takes the name of a released model (``mmv.load("mmv_s3d")``, see :mod:`mmv.pretrained`): the
first time, it downloads and converts the release into the cache; later, it loads the cached copy. A path that
exists is always read as a path.
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
from .preprocess import VOCAB_FILE, Preprocess, preprocess_of_description, vocabulary_sha256

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
VOCAB_METADATA_KEY = "mmv_vocabulary"
FORMAT_VERSION = 1


def model_path(path: str | os.PathLike) -> str | os.PathLike:
    """Where the model ``path`` names is: ``path`` itself when it exists or is not a bare name, else the cached folder
    of the released model of that name (downloaded and converted on first use).

    Raises:
        FileNotFoundError: A bare name that is neither a path nor a released model (the message lists them).
    """
    if Path(path).exists() or not isinstance(path, str) or "/" in path or os.sep in path:
        return path
    from mmv import pretrained  # only for names: loading a path never imports the downloader

    if pretrained.is_released(path):
        return pretrained.fetch(path)
    if not Path(path).suffix:  # a bare name, not a file that is missing
        raise FileNotFoundError(f"{path}: no such model file or directory, and not a released model "
                                f"(released: {', '.join(pretrained.list_released())})")
    return path


def model_description(model: MMV, extra: dict[str, Any] | None = None,
                      preprocess: Preprocess | None = None) -> dict[str, Any]:
    """The JSON stored with the weights."""
    preprocess = preprocess or getattr(model, "preprocess", None) or Preprocess()
    return {
        "format": "mmv",
        "format_version": FORMAT_VERSION,
        "mmv_version": __version__,
        "config": model.cfg.to_dict(),
        "deflated": model.deflated,
        "preprocess": preprocess.to_dict(),
        **(extra or {}),
    }


def save(model: MMV, path: str | os.PathLike, extra: dict[str, Any] | None = None,
         preprocess: Preprocess | None = None) -> Path:
    """Saves ``model`` to a folder (``model.safetensors`` + ``config.json`` [+ ``vocab.json``]) or to one
    ``.safetensors`` file.

    Args:
        model: The model.
        path: A folder, or a file name ending in ``.safetensors``.
        extra: JSON-serialisable facts stored beside the config (e.g. the source checkpoint, the training config).
        preprocess: The preprocessing to store; default ``model.preprocess``.

    Files are written atomically (temporary file, then rename); the weights and vocabulary before the description.
    """
    path = Path(path)
    preprocess = preprocess or getattr(model, "preprocess", None) or Preprocess()
    description = model_description(model, extra, preprocess)
    vocabulary = preprocess.text.vocabulary
    metadata = {"mmv": json.dumps(description)}
    if path.suffix == ".safetensors":
        if vocabulary is not None:
            metadata[VOCAB_METADATA_KEY] = _vocabulary_json(vocabulary)
        atomic_save_safetensors(model.state_dict(), path, metadata=metadata)
        return path
    path.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(model.state_dict(), path / WEIGHTS_NAME, metadata=metadata)
    if vocabulary is not None:
        atomic_write_bytes(path / VOCAB_FILE, _vocabulary_json(vocabulary).encode("utf-8"))
    atomic_write_bytes(path / CONFIG_NAME, (json.dumps(description, indent=2) + "\n").encode())
    return path


def _vocabulary_json(vocabulary: Any) -> str:
    return vocabulary.to_json()


def store_vocabulary(path: str | os.PathLike, vocabulary: Any) -> Path:
    """Stores ``vocabulary`` with the saved model at ``path`` (e.g. a recovered table of rows), so that its text
    inputs need no ``--vocab``; unknown words are then left out if the table has no unknown id.

    A model folder gets a new ``vocab.json`` and ``config.json`` and keeps its weights file as it is (a cached
    release keeps its recorded digest); a single ``.safetensors`` file is written again, since the vocabulary lives
    in its header.

    Raises:
        ValueError: The vocabulary's ids do not fit the model's word embedding.
    """
    path = Path(path)
    description, weights = read_description(path)
    _check_vocabulary_fits(vocabulary, description.get("config", {}), path)
    preprocess = preprocess_of_description(description, where=str(path)).with_vocabulary(vocabulary)
    if path.is_dir():
        description["preprocess"] = preprocess.to_dict()
        atomic_write_bytes(path / VOCAB_FILE, _vocabulary_json(vocabulary).encode("utf-8"))
        atomic_write_bytes(path / CONFIG_NAME, (json.dumps(description, indent=2) + "\n").encode())
        return path
    model = load(path)
    extra = {key: value for key, value in description.items()
             if key not in ("format", "format_version", "mmv_version", "config", "deflated", "preprocess")}
    return save(model, path, extra=extra, preprocess=preprocess)


def _check_vocabulary_fits(vocabulary: Any, config: dict[str, Any], where: Any) -> None:
    """A table of rows must name rows of the model's word embedding (a vocabulary 0..N-1 is checked where used)."""
    rows = (config.get("text_backbone_args") or {}).get("vocab_size")
    if getattr(vocabulary, "is_rows_table", False) and rows is not None and vocabulary.max_id >= rows:
        raise ValueError(f"{where}: the vocabulary names row {vocabulary.max_id} but the model's word embedding has "
                         f"{rows} rows")


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
    metadata = _metadata(path)
    if "mmv" not in metadata:
        raise ValueError(f"{path}: safetensors file without an mmv config (metadata key 'mmv')")
    return json.loads(metadata["mmv"]), path


def _metadata(weights: Path) -> dict[str, str]:
    try:
        with safe_open(str(weights), framework="pt") as f:
            return f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from err


def read_vocabulary(path: str | os.PathLike, description: dict[str, Any], weights: Path) -> Any:
    """The vocabulary stored with a model (None when it has none), checked against the recorded size and SHA-256.

    Raises:
        ValueError: The vocabulary is missing or does not match its record (the message names the file).
    """
    from mmv.data.tokenizer import Vocabulary

    record = (description.get("preprocess") or {}).get("text", {}).get("vocabulary")
    if not record:
        return None
    path = Path(path)
    if path.is_dir():
        source = path / record.get("file", VOCAB_FILE)
        if not source.is_file():
            raise ValueError(f"{source}: missing; the model's config.json records a vocabulary of "
                             f"{record.get('size')} words there")
        vocabulary = Vocabulary.load(source)
    else:
        source = weights
        text = _metadata(weights).get(VOCAB_METADATA_KEY)
        if text is None:
            raise ValueError(f"{weights}: the description records a vocabulary but the file holds none")
        try:
            vocabulary = Vocabulary.from_json(text)
        except ValueError as err:
            raise ValueError(f"{weights}: the stored vocabulary is not readable: {err}") from None
    if len(vocabulary) != record.get("size") or vocabulary_sha256(vocabulary) != record.get("sha256"):
        raise ValueError(f"{source}: the vocabulary does not match the one recorded with the model "
                         f"({len(vocabulary)} words, expected {record.get('size')}; or a different checksum)")
    return vocabulary


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> MMV:
    """Loads a model saved by :func:`save` (or written by ``mmv convert`` / ``mmv train``), in eval mode, or a
    released model by name.

    Args:
        path: A model folder or ``.safetensors`` file; or, when no such path exists, the name of a released model
            (``"mmv_s3d"``, ``"mmv_tsm_resnet_x1"``, ``"mmv_tsm_resnet_x2"``): downloaded and converted into the
            cache on first use (:func:`mmv.pretrained.fetch`), read from the cache afterwards.
        map_location: Where the weights go.

    The result carries its preprocessing as ``model.preprocess`` (:class:`mmv.preprocess.Preprocess`). A model
    saved by an earlier version, without it, gets it from what its description holds (its training config, or the
    released settings for a converted model), with a warning that names what had to be assumed.

    Raises:
        FileNotFoundError: No such path and not a released model's name (the message lists the names).
        mmv.pretrained.DownloadError: A released model could not be downloaded (one line saying what failed).
    """
    path = model_path(path)
    description, weights = read_description(path)
    if description.get("format") != "mmv":
        raise ValueError(f"{path}: not an mmv model description")
    model = MMV(MMVConfig.from_dict(description["config"]))
    if description.get("deflated"):
        deflate(model)
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as err:  # safetensors raises its own error types (a truncated or damaged file)
        raise ValueError(f"{weights}: not a readable safetensors file ({err}); convert or save the model again") \
            from err
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights}: weights do not match the stored config; missing {result.missing_keys[:20]}, "
            f"unexpected {result.unexpected_keys[:20]}"
        )
    vocabulary = read_vocabulary(path, description, weights)
    _check_vocabulary_fits(vocabulary, description["config"], path)
    model.preprocess = preprocess_of_description(description, vocabulary, where=str(path))
    return model.to(map_location).eval()
