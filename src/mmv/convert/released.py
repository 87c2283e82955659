"""Released checkpoint (``mmv_s3d.pkl``, ``mmv_tsm_resnet_x1.pkl``, ``mmv_tsm_resnet_x2.pkl``) → our format."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import save
from ..models import create_model, list_models
from ..models.mmv import MMV
from .haiku import TEXT_SCOPE, ConversionError, haiku_to_state_dict
from .pickle_io import load_released_checkpoint

log = logging.getLogger(__name__)

# As the official config.get_model_config: the architecture is read off the checkpoint's file name.
ARCH_BY_NAME_PATTERN = (
    (r"tsm_resnet_x2", "mmv_fac_tsm_resnet50x2"),
    (r"tsm_resnet_x1|tsm_resnet(?!_x)", "mmv_fac_tsm_resnet50"),
    (r"s3d", "mmv_fac_s3dg"),
)
RELEASED_ARCHS = tuple(arch for _, arch in ARCH_BY_NAME_PATTERN)


def arch_from_filename(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for pattern, arch in ARCH_BY_NAME_PATTERN:
        if re.search(pattern, name):
            return arch
    raise ValueError(
        f"{path}: cannot tell the architecture from the file name (expected 's3d', 'tsm_resnet_x1' or "
        f"'tsm_resnet_x2' in it, as the released files); pass it explicitly with --arch {{{','.join(RELEASED_ARCHS)}}}"
    )


def model_from_haiku(arch: str, params: dict[str, Any], state: dict[str, Any]) -> MMV:
    """Builds ``arch`` sized to the trees (the vocabulary size is read off the embedding) and loads them."""
    embed = params.get(f"{TEXT_SCOPE}/embed", {}).get("embeddings")
    if embed is None:
        raise ConversionError(f"the checkpoint has no text embedding ({TEXT_SCOPE}/embed/embeddings)")
    vocab_size, embedding_dim = np.shape(embed)
    conv = params.get(f"{TEXT_SCOPE}/text_conv1", {}).get("w")
    sentence_dim = int(np.shape(conv)[-1]) if conv is not None else 2048
    model = create_model(
        arch,
        text_backbone_args={"vocab_size": int(vocab_size), "embedding_dim": int(embedding_dim),
                            "sentence_dim": sentence_dim},
    )
    model.load_state_dict(haiku_to_state_dict(model, params, state))
    return model.eval()


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, arch: str | None = None) -> Path:
    """Converts a released checkpoint into a model directory (or one ``.safetensors`` file) for :func:`mmv.load`.

    Args:
        src: the released ``.pkl`` file.
        dst: output directory (``model.safetensors`` + ``config.json``) or a path ending in ``.safetensors``.
        arch: registered model name; default: from the file name, as the official code does.
    """
    arch = arch or arch_from_filename(src)
    if arch not in list_models():  # before reading a pickle of up to 1.5 GB
        raise ValueError(f"unknown architecture {arch!r}; available: {', '.join(list_models())}")
    checkpoint = load_released_checkpoint(src)
    for key in ("params", "state"):
        if key not in checkpoint:
            raise ConversionError(f"{src}: no {key!r} entry (top-level keys: {sorted(checkpoint)})")
    try:
        model = model_from_haiku(arch, checkpoint["params"], checkpoint["state"])
    except ConversionError as err:
        raise ConversionError(f"{src} ({arch}): {err}") from err
    extra = {"source": {"file": Path(src).name, "arch": arch, "converted_from": "official Haiku checkpoint"}}
    out = save(model, dst, extra=extra)
    log.info("converted %s (%s) -> %s", src, arch, out)
    return out
