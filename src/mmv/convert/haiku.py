"""Name and layout tables between the official Haiku MMV trees and our PyTorch modules.

Every PyTorch tensor of an :class:`~mmv.models.MMV` is mapped to exactly one Haiku leaf by explicit per-family
rules (no fuzzy matching). :func:`haiku_to_state_dict` checks that every Haiku leaf the model needs is there, that
every shape matches, and that nothing unexpected is left over; a mismatch raises :class:`ConversionError` listing
the offending keys.

Layout facts (from the official code and the reference fixtures): Haiku convolution kernels are
``[*spatial, in, out]`` (PyTorch: ``[out, in, *spatial]``), Linear weights ``[in, out]``, the text Conv1D
``[1, in, out]``; BN scale/offset and EMA averages are stored with keepdims shapes (``[1,1,1,1,C]`` in S3D);
Haiku's BN at inference reads only ``mean_ema/average`` and ``var_ema/average`` (``hidden``/``counter`` are EMA
internals, not needed).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..models.mmv import MMV

ROOT = "text_audio_video"
HEADS_SCOPE = f"{ROOT}/~_get_pair_embedding_heads"
S3DG_SCOPE = f"{ROOT}/visual_module/~/S3D"
TSM_SCOPE = f"{ROOT}/visual_module/~/TSMResNetV2"
AUDIO_SCOPE = f"{ROOT}/audio_module/~/res_net_v2"
TEXT_SCOPE = f"{ROOT}/text_module/~"

# Haiku leaves that inference never reads; they may be present in a checkpoint and are dropped on purpose.
IGNORED_LEAVES = ("hidden", "counter")

HaikuTree = Mapping[str, Mapping[str, np.ndarray]]


class ConversionError(ValueError):
    """A checkpoint does not fit the architecture: missing/unexpected keys or wrong shapes (all listed)."""


@dataclass(frozen=True)
class LeafRef:
    collection: str  # "params" or "state"
    module: str
    leaf: str
    layout: str  # how to turn the Haiku array into the PyTorch one, see _TO_TORCH

    @property
    def key(self) -> str:
        return f"{self.module}/{self.leaf}"


def _conv_to_torch(a: np.ndarray) -> np.ndarray:
    n = a.ndim
    return np.transpose(a, (n - 1, n - 2, *range(n - 2)))


_TO_TORCH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv": _conv_to_torch,
    "linear": lambda a: a.T,
    "conv1d_k1": lambda a: a[0].T,
    "vector": lambda a: a.reshape(-1),
    "as_is": lambda a: a,
}


def _numbered(base: str, i: int) -> str:
    """Haiku's naming of the i-th module of one class inside a parent: base, base_1, base_2, ..."""
    return base if i == 0 else f"{base}_{i}"


def _bn_leaf(module: str, param: str) -> LeafRef | None:
    """PyTorch BN tensor name → Haiku leaf of the BN module ``module``."""
    return {
        "weight": LeafRef("params", module, "scale", "vector"),
        "bias": LeafRef("params", module, "offset", "vector"),
        "running_mean": LeafRef("state", f"{module}/~/mean_ema", "average", "vector"),
        "running_var": LeafRef("state", f"{module}/~/var_ema", "average", "vector"),
    }.get(param)


_BN = "__cross_replica_batch_norm"

# ---------------------------------------------------------------------------------------------------------------
# Per-family rules: (PyTorch module path relative to the family, parameter name) → LeafRef.
_S3DG_UNITS = {"conv1": "Conv2d_1a_7x7", "conv2b": "Conv2d_2b_1x1", "conv2c": "Conv2d_2c_3x3"}
_S3DG_BRANCHES = {
    "branch_0": "Branch_0_Conv2d_0a_1x1",
    "branch_1a": "Branch_1_Conv2d_0a_1x1",
    "branch_1b": "Branch_1_Conv2d_0b_3x3",
    "branch_2a": "Branch_2_Conv2d_0a_1x1",
    "branch_2b": "Branch_2_Conv2d_0b_3x3",
    "branch_3": "Branch_3_Conv2d_0b_1x1",
}


def _s3dg_unit_leaf(unit: str, rest: str, param: str) -> LeafRef | None:
    if m := re.fullmatch(r"convs\.(\d+)\.conv", rest):
        return LeafRef("params", f"{unit}/~/{_numbered('conv3_d', int(m[1]))}", "w", "conv") if param == "weight" else None
    if m := re.fullmatch(r"bns\.(\d+)", rest):
        return _bn_leaf(f"{unit}/{_numbered(_BN, int(m[1]))}", param)
    if rest == "gating.fc":
        return LeafRef("params", f"{unit}/self_gating", {"weight": "w", "bias": "b"}[param],
                       "linear" if param == "weight" else "as_is")
    return None


def _s3dg_leaf(path: str, param: str) -> LeafRef | None:
    if m := re.fullmatch(r"(conv1|conv2b|conv2c)\.(.+)", path):
        return _s3dg_unit_leaf(f"{S3DG_SCOPE}/{_S3DG_UNITS[m[1]]}", m[2], param)
    if m := re.fullmatch(r"blocks\.(Mixed_\w+?)\.(branch_\w+?)\.(.+)", path):
        return _s3dg_unit_leaf(f"{S3DG_SCOPE}/{m[1]}/{_S3DG_BRANCHES[m[2]]}", m[3], param)
    return None


def _tsm_leaf(path: str, param: str) -> LeafRef | None:
    if path == "stem.conv":
        return LeafRef("params", f"{TSM_SCOPE}/tsm_resnet_stem", "w", "conv")
    if path == "final_bn":
        return _bn_leaf(f"{TSM_SCOPE}/{_BN}", param)
    if m := re.fullmatch(r"units\.(\d+)\.(\d+)\.(.+)", path):
        block = f"{TSM_SCOPE}/tsm_resnet_unit_{m[1]}/block_{m[2]}"
        if c := re.fullmatch(r"(conv_[012]|shortcut_conv)\.conv", m[3]):
            return LeafRef("params", f"{block}/{c[1]}", "w", "conv")
        if b := re.fullmatch(r"bn_(\d)", m[3]):
            return _bn_leaf(f"{block}/{_numbered(_BN, int(b[1]))}", param)
    return None


def _audio_leaf(path: str, param: str) -> LeafRef | None:
    if path == "initial_conv.conv":
        return LeafRef("params", f"{AUDIO_SCOPE}/~/initial_conv", "w", "conv")
    if path == "final_bn":
        return _bn_leaf(f"{AUDIO_SCOPE}/{_BN}", param)
    if m := re.fullmatch(r"block_groups\.(\d+)\.(\d+)\.(.+)", path):
        block = f"{AUDIO_SCOPE}/~/block_group_{m[1]}/block_{m[2]}"
        if c := re.fullmatch(r"convs\.(\d+)\.conv", m[3]):
            return LeafRef("params", f"{block}/~/conv_{c[1]}", "w", "conv")
        if m[3] == "shortcut_conv.conv":
            return LeafRef("params", f"{block}/~/shortcut_conv", "w", "conv")
        if m[3] == "bn_0":
            return _bn_leaf(f"{block}/{_BN}", param)
        if b := re.fullmatch(r"bns\.(\d+)", m[3]):
            return _bn_leaf(f"{block}/{_numbered(_BN, int(b[1]) + 1)}", param)
    return None


def _text_leaf(path: str, param: str) -> LeafRef | None:
    if path == "embed" and param == "weight":
        return LeafRef("params", f"{TEXT_SCOPE}/embed", "embeddings", "as_is")
    if path == "word_proj":
        return LeafRef("params", f"{TEXT_SCOPE}/text_conv1", {"weight": "w", "bias": "b"}[param],
                       "conv1d_k1" if param == "weight" else "as_is")
    return None


def _head_leaf(path: str, param: str, num_hidden: dict[str, int]) -> LeafRef | None:
    m = re.fullmatch(r"(\w+?)\.(.+)", path)
    if not m:
        return None
    head, rest = m[1], m[2]
    scope = f"{HEADS_SCOPE}/{head}"
    linear = lambda name: LeafRef("params", f"{scope}/{name}", {"weight": "w", "bias": "b"}[param],  # noqa: E731
                                  "linear" if param == "weight" else "as_is")
    if rest == "proj":
        return linear("final_projection")
    if h := re.fullmatch(r"hidden\.(\d+)", rest):
        return linear(_numbered("final_projection_inner", int(h[1])))
    # BNs are numbered in call order: the hidden layers' first, then the one after the projection.
    if h := re.fullmatch(r"hidden_bns\.(\d+)", rest):
        return _bn_leaf(f"{scope}/{_numbered(_BN, int(h[1]))}", param)
    if rest == "bn_out":
        return _bn_leaf(f"{scope}/{_numbered(_BN, num_hidden[head])}", param)
    return None


def leaf_table(model: MMV) -> dict[str, LeafRef]:
    """Every PyTorch state-dict tensor of ``model`` (except BN step counters) → its Haiku leaf."""
    video_rules = {"s3dg": _s3dg_leaf, "tsm_resnet": _tsm_leaf}
    if model.cfg.video_backbone not in video_rules:
        raise ConversionError(f"no Haiku name table for video backbone {model.cfg.video_backbone!r}")
    num_hidden = {name: len(head.hidden) for name, head in model.heads.items()}
    rules: dict[str, Callable[[str, str], LeafRef | None]] = {
        "video_backbone": video_rules[model.cfg.video_backbone],
        "audio_backbone": _audio_leaf,
        "text_backbone": _text_leaf,
        "heads": lambda p, n: _head_leaf(p, n, num_hidden),
    }
    table: dict[str, LeafRef] = {}
    unmapped = []
    for key in model.state_dict():
        if key.endswith("num_batches_tracked"):
            continue
        part, _, rest = key.partition(".")
        path, _, param = rest.rpartition(".")
        ref = rules[part](path, param) if part in rules else None
        if ref is None:
            unmapped.append(key)
        else:
            table[key] = ref
    if unmapped:
        raise ConversionError(f"no Haiku name for {len(unmapped)} tensors: {unmapped[:20]}")
    return table


def haiku_to_state_dict(model: MMV, params: HaikuTree, state: HaikuTree) -> dict[str, torch.Tensor]:
    """Maps Haiku ``params``/``state`` trees (``{module: {leaf: array}}``) to a state dict for ``model``.

    Raises:
        ConversionError: listing every missing leaf, every shape mismatch and every unexpected leaf.
    """
    trees = {"params": params, "state": state}
    table = leaf_table(model)
    reference = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    missing, bad_shape = [], []
    used: set[tuple[str, str]] = set()
    for key, ref in table.items():
        leaves = trees[ref.collection].get(ref.module)
        if leaves is None or ref.leaf not in leaves:
            missing.append(f"{ref.collection}:{ref.key}")
            continue
        used.add((ref.collection, ref.key))
        array = _TO_TORCH[ref.layout](np.asarray(leaves[ref.leaf]))
        if tuple(array.shape) != tuple(reference[key].shape):
            bad_shape.append(f"{ref.key} {tuple(np.shape(leaves[ref.leaf]))} -> {key} expects {tuple(reference[key].shape)}")
            continue
        out[key] = torch.from_numpy(np.array(array, dtype=np.float32, order="C", copy=True))
    unexpected = [
        f"{collection}:{module}/{leaf}"
        for collection, tree in trees.items()
        for module, leaves in tree.items()
        for leaf in leaves
        if (collection, f"{module}/{leaf}") not in used and leaf not in IGNORED_LEAVES
        and not _is_unused_official_head(model, module)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {missing[:30]}")
    if bad_shape:
        problems.append(f"{len(bad_shape)} with the wrong shape: {bad_shape[:30]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {unexpected[:30]}")
    if problems:
        raise ConversionError("the checkpoint does not fit the architecture: " + "; ".join(problems))
    for key, value in reference.items():  # BN step counters are not in Haiku trees
        out.setdefault(key, value.clone())
    return out


def _is_unused_official_head(model: MMV, module: str) -> bool:
    """Heads of the official training graph that a model built without them may drop (never read at inference)."""
    m = re.match(rf"{re.escape(HEADS_SCOPE)}/(audio2txt_embd|txt2audio_embd)/", module + "/")
    return bool(m) and m[1] not in model.heads
