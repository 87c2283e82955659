"""Rebuild the parameters of the official MMV reference trees (``tests/reference/*_tree.json``).

The reference stores no weights: each leaf of the official Haiku ``params``/``state`` tree is defined by a
deterministic rule (``tests/reference/README.md`` names its origin; the rule itself is the "Leaf key and value rule"
of the reference's README), reproduced here:

* ``key = module_path + "/" + leaf_name``; ``seed = crc32(key) & 0xffffffff``;
  ``N = RandomState(seed).standard_normal(shape)`` in float64.
* the value is a per-kind formula of ``N`` computed in float64 and cast to float32 once:
  weight ``N * gain * sqrt(1 / fan_in)`` (``fan_in = prod(shape[:-1])``, ``gain = 1.75`` for 5-D kernels, else 1),
  bias ``0.1 N``, embedding ``N``, BN scale ``1 + 0.1 N``, BN offset ``0.1 N``, BN moving mean ``0.1 N``,
  BN moving variance ``exp(0.2 N)``.
* an EMA's ``hidden`` is an exact copy of its sibling ``average`` (drawn with the *average's* key) and its
  ``counter`` is ``int32(100000)`` of shape ``()``.

Every generated leaf is checked against the sha256 stored in the tree (see :func:`array_sha256`), so a mistake in
the rule cannot go unnoticed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
MODEL_NAMES = ("s3d", "tsm_resnet_x1", "tsm_resnet_x2")

# Rule constants (they are also stored in each tree's ``rule_constants``; a test checks that they agree).
WEIGHT_GAIN = 1.0
CONV3D_WEIGHT_GAIN = 1.75  # NOTE: keeps S3D activations O(1) without residuals; see the reference README.
BIAS_SCALE = 0.1
EMBEDDING_SCALE = 1.0
BN_SCALE_SPREAD = 0.1
BN_OFFSET_SCALE = 0.1
BN_MEAN_SCALE = 0.1
BN_LOGVAR_SCALE = 0.2
EMA_COUNTER = 100000

Tree = dict[str, dict[str, np.ndarray]]


def tree_path(model: str) -> Path:
    """Path of the tree JSON of one reference model (``"s3d"``, ``"tsm_resnet_x1"`` or ``"tsm_resnet_x2"``)."""
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown reference model {model!r}; expected one of {MODEL_NAMES}")
    return REFERENCE_DIR / f"{model}_tree.json"


def io_path(model: str) -> Path:
    """Path of the inputs/outputs npz of one reference model."""
    return tree_path(model).with_name(f"{model}_io.npz")


@functools.lru_cache(maxsize=None)
def load_tree(tree_json_path: str | Path) -> dict[str, Any]:
    """Parsed tree JSON (cached; do not mutate)."""
    with open(tree_json_path, encoding="utf-8") as f:
        return json.load(f)


def array_sha256(array: np.ndarray) -> str:
    """The reference's leaf digest: ``sha256(str(dtype) + str(shape) + raw bytes)``.

    Precisely, with ``a = np.ascontiguousarray(array)``:
    ``hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())``, e.g. the prefix
    ``b"float32(1, 1, 1, 64)"``. ``np.ascontiguousarray`` returns at least 1-d arrays, so a 0-d leaf (an EMA
    counter) is hashed with the prefix ``b"int32(1,)"``: that is what the stored digests say, and why shapes are
    checked separately from digests. Found by matching the digests stored in the trees; the plain
    ``sha256(a.tobytes())`` does not match them.
    """
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(str(array.dtype).encode("utf-8"))
    digest.update(str(tuple(array.shape)).encode("utf-8"))
    digest.update(array.tobytes())
    return digest.hexdigest()


def leaf_seed(key: str) -> int:
    """RandomState seed of a leaf: the unsigned CRC32 of its UTF-8 key."""
    return zlib.crc32(key.encode("utf-8")) & 0xFFFFFFFF


def leaf_kind(collection: str, module: str, name: str, ndim: int) -> str:
    """Rule category of a leaf, derived from where it sits in the tree (cross-checked with the tree's ``kind``)."""
    if collection == "params":
        kinds = {"w": "weight", "b": "bias", "embeddings": "embedding", "scale": "bn_scale", "offset": "bn_offset"}
        if name in kinds:
            return kinds[name]
    elif collection == "state":
        ema = module.rsplit("/", 1)[-1]
        if name == "counter" and ema in ("mean_ema", "var_ema"):
            return "ema_counter"
        if name in ("average", "hidden") and ema in ("mean_ema", "var_ema"):
            return "bn_mean" if ema == "mean_ema" else "bn_var"
    raise ValueError(f"no rule for {collection} leaf {module}/{name} (ndim {ndim})")


def _standard_normal(key: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.RandomState(leaf_seed(key)).standard_normal(shape)


def leaf_value(collection: str, module: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The value of one leaf under the reference rule (float32, or int32 for EMA counters)."""
    kind = leaf_kind(collection, module, name, len(shape))
    if kind == "ema_counter":
        return np.array(EMA_COUNTER, dtype=np.int32).reshape(shape)
    # NOTE: an EMA's `hidden` is drawn with its sibling `average`'s key, so both hold the same values.
    key = f"{module}/{'average' if name == 'hidden' else name}"
    n = _standard_normal(key, shape)  # float64
    # NOTE: in-place float64 arithmetic, in the order the rule is written, so that the float32 values are
    # bit-identical to the reference while the largest trees stay fast to build.
    if kind == "weight":
        gain = CONV3D_WEIGHT_GAIN if len(shape) == 5 else WEIGHT_GAIN
        fan_in = math.prod(shape[:-1])
        if gain != 1.0:
            n *= gain
        n *= np.sqrt(1.0 / fan_in)
    elif kind in ("bias", "bn_offset", "bn_mean"):
        n *= {"bias": BIAS_SCALE, "bn_offset": BN_OFFSET_SCALE, "bn_mean": BN_MEAN_SCALE}[kind]
    elif kind == "embedding":
        n *= EMBEDDING_SCALE
    elif kind == "bn_scale":
        n *= BN_SCALE_SPREAD
        n += 1.0
    else:  # bn_var
        n *= BN_LOGVAR_SCALE
        np.exp(n, out=n)
    return n.astype(np.float32)


def hash_mismatches(params: Tree, state: Tree, tree: dict[str, Any]) -> list[str]:
    """Keys whose array is missing, misshaped or differs from the tree's sha256 (empty when all match)."""
    collections = {"params": params, "state": state}
    bad = []
    for leaf in tree["leaves"]:
        array = collections[leaf["collection"]].get(leaf["module"], {}).get(leaf["name"])
        if array is None or array_sha256(array) != leaf["sha256"]:
            bad.append(f"{leaf['collection']}:{leaf['key']}")
    return bad


def make_official_params(tree_json_path: str | Path, verify: bool = True) -> tuple[Tree, Tree]:
    """Rebuild all ``params`` and ``state`` leaves of a reference tree, in Haiku's layout.

    Results are cached per process (the largest tree, TSM-ResNet50x2, holds 124M parameters); the arrays are
    returned read-only so that one test cannot alter what the next one sees. Copy before modifying.

    Args:
        tree_json_path: a ``tests/reference/<model>_tree.json`` file.
        verify: check every leaf against the tree's sha256 and its rule kind against the tree's ``kind``.

    Returns:
        ``(params, state)``, each ``{module_path: {leaf_name: np.ndarray}}``.

    Raises:
        ValueError: a leaf's kind or digest disagrees with the tree.
    """
    # NOTE: one cache entry per file, whether it is named by a str or a Path, relative or absolute.
    return _make_official_params(str(Path(tree_json_path).resolve()), verify)


@functools.lru_cache(maxsize=None)
def _make_official_params(tree_json_path: str, verify: bool) -> tuple[Tree, Tree]:
    tree = load_tree(tree_json_path)
    params: Tree = {}
    state: Tree = {}
    for leaf in tree["leaves"]:
        shape = tuple(leaf["shape"])
        if verify:
            kind = leaf_kind(leaf["collection"], leaf["module"], leaf["name"], len(shape))
            if kind != leaf["kind"]:
                raise ValueError(f"{tree_json_path}: {leaf['key']} has kind {leaf['kind']!r}, the rule says {kind!r}")
        array = leaf_value(leaf["collection"], leaf["module"], leaf["name"], shape)
        array.flags.writeable = False
        target = params if leaf["collection"] == "params" else state
        target.setdefault(leaf["module"], {})[leaf["name"]] = array
    if verify:
        bad = hash_mismatches(params, state, tree)
        if bad:
            raise ValueError(f"{tree_json_path}: {len(bad)} leaves differ from the tree's sha256, e.g. {bad[:5]}")
    return params, state
