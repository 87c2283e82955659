"""Parity with the official MMV models (Haiku/JAX): rebuild the reference parameters, write them as a released
checkpoint, convert with ``mmv convert``, load with ``mmv.load``, run the stored inputs, compare all outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mmv
from mmv.cli.main import main as cli_main
from mmv.preprocess import Preprocess
from official_params import MODEL_NAMES, io_path, make_official_params, tree_path
from released_pickle import write_released_checkpoint

OUTPUTS = (
    "vid_repr", "aud_repr", "vid_embd_toaud", "vid_embd_totxt",
    "aud_embd_tovid", "aud_embd_totxt", "txt_embd_tovid", "txt_embd_toaud",
)
# The acceptance bound: max abs error <= 1e-4 x max |reference| on every output.
REL_TOL = 1e-4


@pytest.mark.parity
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_released_checkpoint_parity(name: str, tmp_path) -> None:
    params, state = make_official_params(tree_path(name))
    pkl = write_released_checkpoint(params, state, tmp_path / f"mmv_{name}.pkl")
    out_dir = tmp_path / "converted"
    assert cli_main(["convert", str(pkl), "--out", str(out_dir)]) == 0
    del params, state

    model = mmv.load(out_dir)
    assert not model.training
    # mmv convert records the released settings: the released UCF101 protocol's clips, the paper's audio.
    assert model.preprocess == Preprocess.released() and model.preprocess.assumed == ()
    config = json.loads((out_dir / "config.json").read_text())
    assert config["preprocess"]["video"]["fps"] == 12.5 and config["preprocess"]["audio"]["mel"]["n_mels"] == 80
    io = np.load(io_path(name))
    with torch.inference_mode():
        out = model(
            video=torch.from_numpy(io["video"]),
            audio=torch.from_numpy(io["audio"]),
            word_ids=torch.from_numpy(io["word_ids"]),
        )
    for key in OUTPUTS:
        ours, ref = out[key].numpy(), io[key]
        assert ours.shape == ref.shape, key
        err = np.abs(ours - ref).max() / np.abs(ref).max()
        assert err <= REL_TOL, f"{name} {key}: max abs error {err:.2e} x max|ref|"


@pytest.mark.parity
def test_s3d_space_to_depth_layout_matches_reference() -> None:
    """The model folds raw RGB itself; its folding must equal the official space_to_depth_batch."""
    from mmv.models.s3dg import space_to_depth

    io = np.load(io_path("s3d"))
    folded = space_to_depth(torch.from_numpy(io["video"])).numpy()
    np.testing.assert_array_equal(folded, io["video_s2d"])


@pytest.mark.parity
def test_reference_block_statistics_s3d() -> None:
    """Per-block statistics of S3D-G match the official intermediates (localises a divergence if parity fails)."""
    import json

    from mmv.convert.released import model_from_haiku
    from official_params import REFERENCE_DIR

    params, state = make_official_params(tree_path("s3d"))
    model = model_from_haiku("mmv_fac_s3dg", params, state)
    io = np.load(io_path("s3d"))
    with torch.inference_mode():
        endpoints = model.video_backbone.forward_endpoints(torch.from_numpy(io["video"]))
    stats = json.loads((REFERENCE_DIR / "s3d_intermediates.json").read_text())
    records = stats["records"]
    checked = 0
    for record in records:
        module = record["module"]
        block = module.rsplit("/", 1)[-1]
        if not module.endswith(f"S3D/{block}") or block not in endpoints:
            continue
        ours = endpoints[block].permute(0, 2, 3, 4, 1).numpy()  # channels-last like Haiku
        assert list(ours.shape) == list(record["shape"]), block
        assert ours.mean() == pytest.approx(record["mean"], rel=1e-4, abs=1e-5), block
        assert ours.std() == pytest.approx(record["std"], rel=1e-4, abs=1e-5), block
        checked += 1
    assert checked >= 10
