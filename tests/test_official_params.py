"""The parameter rule of the official reference, checked against the digests and examples the reference stores."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from official_params import (
    BIAS_SCALE,
    BN_LOGVAR_SCALE,
    BN_MEAN_SCALE,
    BN_OFFSET_SCALE,
    BN_SCALE_SPREAD,
    CONV3D_WEIGHT_GAIN,
    EMA_COUNTER,
    EMBEDDING_SCALE,
    MODEL_NAMES,
    WEIGHT_GAIN,
    array_sha256,
    hash_mismatches,
    leaf_seed,
    leaf_value,
    load_tree,
    make_official_params,
    tree_path,
)

S3D_CONV1 = "text_audio_video/visual_module/~/S3D/Conv2d_1a_7x7"
HEADS = "text_audio_video/~_get_pair_embedding_heads"


def _tree(model: str) -> dict:
    return load_tree(str(tree_path(model)))


def _params_state(model: str):
    return make_official_params(str(tree_path(model)))


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_rule_constants_match_the_tree(model):
    constants = _tree(model)["rule_constants"]
    assert constants == {
        "WEIGHT_GAIN": WEIGHT_GAIN,
        "CONV3D_WEIGHT_GAIN": CONV3D_WEIGHT_GAIN,
        "BIAS_SCALE": BIAS_SCALE,
        "EMBEDDING_SCALE": EMBEDDING_SCALE,
        "BN_SCALE_SPREAD": BN_SCALE_SPREAD,
        "BN_OFFSET_SCALE": BN_OFFSET_SCALE,
        "BN_MEAN_SCALE": BN_MEAN_SCALE,
        "BN_LOGVAR_SCALE": BN_LOGVAR_SCALE,
        "EMA_COUNTER": EMA_COUNTER,
    }


# The worked examples of the reference README (seed and first three values).
README_EXAMPLES = [
    ("params", S3D_CONV1 + "/~/conv3_d", "w", (2, 4, 4, 24, 64), 2009495299,
     ("-0.0015683715", "-0.11691185", "0.023908971")),
    ("params", S3D_CONV1 + "/__cross_replica_batch_norm", "scale", (1, 1, 1, 1, 64), 1423710129,
     ("1.0610081", "1.0075006", "1.2486706")),
    ("state", S3D_CONV1 + "/__cross_replica_batch_norm/~/var_ema", "average", (1, 1, 1, 1, 64), 1574690400,
     ("1.4728881", "0.8944967", "0.9817373")),
    ("params", "text_audio_video/text_module/~/embed", "embeddings", (1000, 300), 1863336670,
     ("0.43451932", "0.86313683", "-0.21642756")),
    ("params", HEADS + "/vis_embd/final_projection", "b", (256,), 1407723527,
     ("-0.11923213", "0.061134536", "0.045967605")),
]


@pytest.mark.parametrize("collection,module,name,shape,seed,first", README_EXAMPLES)
def test_readme_examples(collection, module, name, shape, seed, first):
    key = f"{module}/{name}"
    assert leaf_seed(key) == seed
    value = leaf_value(collection, module, name, shape)
    assert value.dtype == np.float32 and value.shape == shape
    # The README prints 7 to 8 significant digits (the sha256 test checks exact values).
    np.testing.assert_allclose(value.reshape(-1)[:3], [float(v) for v in first], rtol=1e-7, atol=0)


def test_hidden_copies_average_and_counter_is_constant():
    module = S3D_CONV1 + "/__cross_replica_batch_norm/~/mean_ema"
    average = leaf_value("state", module, "average", (1, 1, 1, 1, 64))
    hidden = leaf_value("state", module, "hidden", (1, 1, 1, 1, 64))
    assert hidden.tobytes() == average.tobytes()
    counter = leaf_value("state", module, "counter", ())
    assert counter.dtype == np.int32 and counter.shape == () and int(counter) == 100000


def test_weight_gain_applies_to_5d_kernels_only():
    """Same key, same draws: a 5-D kernel is 1.75x the rule's gain-1 value (up to float32 rounding)."""
    module, shape5 = S3D_CONV1 + "/~/conv3_d", (2, 4, 4, 24, 64)
    w5 = leaf_value("params", module, "w", shape5).astype(np.float64)
    n = np.random.RandomState(leaf_seed(module + "/w")).standard_normal(shape5)
    np.testing.assert_allclose(w5, n * 1.75 / math.sqrt(2 * 4 * 4 * 24), rtol=1e-6)
    w2 = leaf_value("params", module, "w", (768, 64)).astype(np.float64)  # the same draws, as a Linear
    np.testing.assert_allclose(w2.reshape(-1), n.reshape(-1) / math.sqrt(768), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_leaf_matches_the_tree(model):
    """All leaves of the tree: sha256 (checked inside the generator), shape, dtype and the stored counts."""
    tree = _tree(model)
    params, state = _params_state(model)  # raises if any digest or kind disagrees
    collections = {"params": params, "state": state}
    for leaf in tree["leaves"]:
        array = collections[leaf["collection"]][leaf["module"]][leaf["name"]]
        assert array.shape == tuple(leaf["shape"]) and str(array.dtype) == leaf["dtype"], leaf["key"]
    counts = tree["counts"]
    assert sum(map(len, params.values())) == counts["param_leaves"]
    assert sum(map(len, state.values())) == counts["state_leaves"]
    assert sum(a.size for leaves in params.values() for a in leaves.values()) == counts["params_total"]
    assert sum(a.size for leaves in state.values() for a in leaves.values()) == counts["state_values_total"]
    assert hash_mismatches(params, state, tree) == []


# Parameter counts per part, from the reference README.
PART_COUNTS = {
    "text_audio_video/audio_module/": 23_494_080,
    "text_audio_video/text_module/": 916_448,
    HEADS + "/vis_embd/": 131_840,
    HEADS + "/audio_embd/": 1_049_088,
    HEADS + "/txt_embd/": 524_544,
    HEADS + "/txt2audio_embd/": 1_049_088,
    HEADS + "/audio2txt_embd/": 1_049_088,
}
VISUAL_COUNTS = {
    "s3d": ("text_audio_video/visual_module/~/S3D/", 9_146_000, 788_992),
    "tsm_resnet_x1": ("text_audio_video/visual_module/~/TSMResNetV2/", 23_500_352, 1_313_280),
    "tsm_resnet_x2": ("text_audio_video/visual_module/~/TSMResNetV2/", 93_891_712, 2_361_856),
}


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_parameter_counts_per_part(model):
    sizes = {leaf["key"]: leaf["size"] for leaf in _tree(model)["leaves"] if leaf["collection"] == "params"}

    def count(prefix: str) -> int:
        return sum(size for key, size in sizes.items() if key.startswith(prefix))

    backbone, visual, vid2audio = VISUAL_COUNTS[model]
    assert count(backbone) == visual
    assert count(HEADS + "/vid2audio_embd/") == vid2audio
    for prefix, expected in PART_COUNTS.items():
        assert count(prefix) == expected, prefix


def test_hash_detects_a_one_ulp_change():
    module = HEADS + "/vis_embd/final_projection"
    params = {module: {"b": leaf_value("params", module, "b", (256,)).copy()}}
    tree = {"leaves": [l for l in _tree("s3d")["leaves"] if l["module"] == module and l["name"] == "b"]}
    assert hash_mismatches(params, {}, tree) == []
    params[module]["b"][7] = np.nextafter(params[module]["b"][7], np.float32(np.inf))
    assert hash_mismatches(params, {}, tree) == [f"params:{module}/b"]


def test_array_sha256_convention():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert array_sha256(a) == hashlib.sha256(b"float32(2, 3)" + a.tobytes()).hexdigest()
    assert array_sha256(a.T) == hashlib.sha256(b"float32(3, 2)" + np.ascontiguousarray(a.T).tobytes()).hexdigest()
    # 0-d arrays are hashed as shape (1,) (np.ascontiguousarray is at least 1-d), as the stored digests are.
    c = np.array(100000, dtype=np.int32)
    assert array_sha256(c) == hashlib.sha256(b"int32(1,)" + c.tobytes()).hexdigest()
