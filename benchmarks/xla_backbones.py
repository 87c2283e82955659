"""The visual backbones as XLA programs, to time XLA against ``mmv`` in the same run (``bench_models.py --xla``).

Written op for op from the structure of the official Haiku modules (the ``'gpu'`` mode of ``TSMResNetV2``, and
``S3D``): ``lax.conv_general_dilated`` with ``'SAME'`` padding in NHWC / NDHWC, the BN at inference as
``(x - mean) * scale * rsqrt(var + eps) + offset`` with the statistics passed in (not folded: the official apply
function receives them as arguments), ``lax.reduce_window`` max pools, the temporal shift as slices, pads and a
concatenation, and the whole forward pass under one ``jax.jit``. XLA fuses the elementwise work into loops around its
convolutions; that is the schedule ``mmv``'s eager PyTorch is measured against.

The parameters are read from an ``mmv`` backbone (``*_params_from_torch``), so both run the same network: the
benchmark prints the largest difference between the two outputs, which checks that the XLA program is the same
computation (with weights whose outputs depend on the input: at PyTorch's default initialisation S3D-G's output
is the same for every clip, so the benchmark draws its weights at the scale of the official reference rule).
JAX is needed only here (``pip install -e ".[xla]"``); nothing in ``mmv`` imports this file.

Run it to check the XLA programs against the official outputs: ``python benchmarks/xla_backbones.py`` rebuilds the
official reference parameters (``tests/official_params.py``), converts them as ``mmv convert`` does, runs the
programs on the stored clips and prints the error against the official ``vid_repr`` (about 1e-6 or less).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax

BN_EPS = 1e-5


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def _bn_params(bn: torch.nn.Module) -> dict:
    return {"scale": _np(bn.weight), "offset": _np(bn.bias), "mean": _np(bn.running_mean), "var": _np(bn.running_var)}


def _batch_norm(x: jnp.ndarray, p: dict) -> jnp.ndarray:
    """Haiku's BatchNorm at inference: moving statistics, channels last."""
    inv = p["scale"] * lax.rsqrt(p["var"] + BN_EPS)
    return (x - p["mean"]) * inv + p["offset"]


def _conv(x: jnp.ndarray, w: jnp.ndarray, stride: int | tuple[int, ...], bias: jnp.ndarray | None = None):
    """hk.ConvND(padding='SAME', with_bias=bias is not None), channels last."""
    nd = w.ndim - 2
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    spec = ("NHWC", "HWIO", "NHWC") if nd == 2 else ("NDHWC", "DHWIO", "NDHWC")
    out = lax.conv_general_dilated(x, w, stride, "SAME", dimension_numbers=spec)
    return out if bias is None else out + bias


def _max_pool(x: jnp.ndarray, window: tuple[int, ...], strides: tuple[int, ...]) -> jnp.ndarray:
    """hk.max_pool(padding='SAME') over the axes between batch and channels."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), "SAME")


# --------------------------------------------------------------------------------------------------- TSM-ResNetV2

def tsm_params_from_torch(model: torch.nn.Module) -> dict:
    """The weights of an ``mmv`` ``TSMResNetV2`` as a pytree (HWIO kernels)."""
    def kernel(conv) -> np.ndarray:
        return _np(conv.conv.weight.permute(2, 3, 1, 0))

    units = []
    for unit in model.units:
        blocks = []
        for block in unit:
            b = {"bn_0": _bn_params(block.bn_0), "conv_0": kernel(block.conv_0), "bn_1": _bn_params(block.bn_1),
                 "conv_1": kernel(block.conv_1), "bn_2": _bn_params(block.bn_2), "conv_2": kernel(block.conv_2)}
            if block.shortcut_conv is not None:
                b["shortcut_conv"] = kernel(block.shortcut_conv)
            blocks.append(b)
        units.append(blocks)
    return {"stem": kernel(model.stem), "units": units, "final_bn": _bn_params(model.final_bn)}


def _temporal_shift(x: jnp.ndarray, num_frames: int, fraction: float) -> jnp.ndarray:
    """The official 'gpu'-mode shift on [B*T, H, W, C]: output channels [0:n] come from the next frame's last n
    channels, [C-n:C] from the previous frame's first n, zero padded at the clip ends."""
    shape = x.shape
    clips = jnp.reshape(x, (-1, num_frames) + shape[1:])
    n = int(shape[-1] * fraction)
    backward = jnp.pad(clips[:, 1:, :, :, -n:], ((0, 0), (0, 1), (0, 0), (0, 0), (0, 0)))
    forward = jnp.pad(clips[:, :-1, :, :, :n], ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))
    shifted = jnp.concatenate([backward, clips[:, :, :, :, n:-n], forward], axis=4)
    return jnp.reshape(shifted, (-1,) + shape[1:])


def _tsm_block(x, p, stride: int, num_frames: int, fraction: float):
    preact = jax.nn.relu(_batch_norm(x, p["bn_0"]))
    shortcut = _conv(preact, p["shortcut_conv"], stride) if "shortcut_conv" in p else x
    if fraction:
        preact = _temporal_shift(preact, num_frames, fraction)
    residual = _conv(preact, p["conv_0"], 1)
    residual = _conv(jax.nn.relu(_batch_norm(residual, p["bn_1"])), p["conv_1"], stride)
    residual = _conv(jax.nn.relu(_batch_norm(residual, p["bn_2"])), p["conv_2"], 1)
    return shortcut + residual


@functools.partial(jax.jit, static_argnames=("fraction",))
def tsm_resnet(params: dict, video: jnp.ndarray, fraction: float = 0.125) -> jnp.ndarray:
    """[B, T, H, W, 3] → [B, C]: mean over H, W and T of the last feature map (after the final BN+ReLU)."""
    b, t = video.shape[:2]
    x = jnp.reshape(video, (b * t,) + video.shape[2:])
    x = _max_pool(_conv(x, params["stem"], 2), (3, 3), (2, 2))
    for i, unit in enumerate(params["units"]):
        for j, block in enumerate(unit):
            x = _tsm_block(x, block, (1, 2, 2, 2)[i] if j == 0 else 1, t, fraction)
    x = jax.nn.relu(_batch_norm(x, params["final_bn"]))
    return jnp.mean(jnp.reshape(x, (b, t) + x.shape[1:]), axis=(1, 2, 3))


# --------------------------------------------------------------------------------------------------------- S3D-G
# As the official Haiku S3D: NDHWC, convolutions without bias, each followed by BN and ReLU; separable units as a
# (1,k,k) then a (k,1,1) convolution, each with its own BN and ReLU; self-gating; Inception blocks as four branches
# concatenated on channels. None of mmv's inference shortcuts (stacked 1x1 convolutions, BN folding, in-place
# gating, separable pools): XLA gets the plain graph and fuses it as it likes.

# The order of the Inception blocks and of the max pools between them (as in ``mmv.models.s3dg.S3DG.blocks``).
_BLOCK_ORDER = ("Mixed_3b", "Mixed_3c", "MaxPool_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
                "MaxPool_5a_2x2", "Mixed_5b", "Mixed_5c")
_POOLS = {"MaxPool_4a_3x3": ((3, 3, 3), (2, 2, 2)), "MaxPool_5a_2x2": ((2, 2, 2), (2, 2, 2))}
_BRANCHES = ("branch_0", "branch_1a", "branch_1b", "branch_2a", "branch_2b", "branch_3")


def _unit_params(unit: torch.nn.Module) -> dict:
    """One ``SUnit3D``: a list of (DHWIO kernel, BN) per convolution, and the gating Linear (``w [C, C]``, ``b``)."""
    convs = []
    for conv, bn in zip(unit.convs, unit.bns):
        if conv.conv.bias is not None:
            raise ValueError("S3D-G convolutions have no bias")
        convs.append({"w": _np(conv.conv.weight.permute(2, 3, 4, 1, 0)), "bn": _bn_params(bn)})
    p: dict = {"convs": convs}
    if unit.gating is not None:
        p["gating"] = {"w": _np(unit.gating.fc.weight.t()), "b": _np(unit.gating.fc.bias)}
    return p


def s3dg_params_from_torch(model: torch.nn.Module) -> dict:
    """The weights of an ``mmv`` ``S3DG`` as a pytree (DHWIO kernels, BN not folded); the released layout only
    (space-to-depth stem)."""
    if not model.cfg.space_to_depth:
        raise ValueError("the XLA S3D-G program has the space-to-depth stem of the released models only")
    for name, (kernel, stride) in _POOLS.items():
        pool = model.blocks[name]
        if (tuple(pool.kernel_size), tuple(pool.stride)) != (kernel, stride):
            raise ValueError(f"{name} is {pool.kernel_size}/{pool.stride} (a deflated network?), not supported")
    blocks = {name: {b: _unit_params(getattr(model.blocks[name], b)) for b in _BRANCHES}
              for name in _BLOCK_ORDER if name not in _POOLS}
    return {"conv1": _unit_params(model.conv1), "conv2b": _unit_params(model.conv2b),
            "conv2c": _unit_params(model.conv2c), "blocks": blocks}


def _space_to_depth(video: jnp.ndarray) -> jnp.ndarray:
    """[B, T, H, W, C] → [B, T/2, H/2, W/2, 8C], channel = ((dt*2 + dh)*2 + dw)*C + c (``space_to_depth_batch``)."""
    b, t, h, w, c = video.shape
    x = jnp.reshape(video, (b, t // 2, 2, h // 2, 2, w // 2, 2, c))
    x = jnp.transpose(x, (0, 1, 3, 5, 2, 4, 6, 7))
    return jnp.reshape(x, (b, t // 2, h // 2, w // 2, 8 * c))


def _self_gating(x: jnp.ndarray, p: dict) -> jnp.ndarray:
    """x * sigmoid(Linear(mean over T, H, W of x)), one gate per clip and channel."""
    context = jnp.mean(x, axis=(1, 2, 3))  # [B, C]
    gate = jax.nn.sigmoid(context @ p["w"] + p["b"])
    return x * gate[:, None, None, None, :]


def _unit(x: jnp.ndarray, p: dict) -> jnp.ndarray:
    """Conv → BN → ReLU for each convolution of the unit (one, or spatial then temporal; every stride is 1 in the
    released S3D-G), then the gating if any."""
    for c in p["convs"]:
        x = jax.nn.relu(_batch_norm(_conv(x, c["w"], 1), c["bn"]))
    if "gating" in p:
        x = _self_gating(x, p["gating"])
    return x


def _inception(x: jnp.ndarray, p: dict) -> jnp.ndarray:
    branch_0 = _unit(x, p["branch_0"])
    branch_1 = _unit(_unit(x, p["branch_1a"]), p["branch_1b"])
    branch_2 = _unit(_unit(x, p["branch_2a"]), p["branch_2b"])
    branch_3 = _unit(_max_pool(x, (3, 3, 3), (1, 1, 1)), p["branch_3"])
    return jnp.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)


@jax.jit
def s3dg(params: dict, video: jnp.ndarray) -> jnp.ndarray:
    """[B, T, H, W, 3] → [B, C]: mean over T, H and W of ``Mixed_5c``."""
    # The released layout: 2x2x2 blocks folded into 24 channels, then a (2,4,4) stride-1 stem.
    if video.shape[1] == 1:  # a single frame as a static 2-frame clip, as ``S3DG.fold_input`` does
        video = jnp.broadcast_to(video, (video.shape[0], 2) + video.shape[2:])
    x = _unit(_space_to_depth(video), params["conv1"])  # Conv2d_1a_7x7
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # MaxPool_2a_3x3
    x = _unit(x, params["conv2b"])  # Conv2d_2b_1x1
    x = _unit(x, params["conv2c"])  # Conv2d_2c_3x3 (separable, gated)
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # MaxPool_3a_3x3
    for name in _BLOCK_ORDER:
        if name in _POOLS:
            x = _max_pool(x, *_POOLS[name])
        else:
            x = _inception(x, params["blocks"][name])
    return jnp.mean(x, axis=(1, 2, 3))


def program_for(backbone: torch.nn.Module):
    """``video -> features``: the XLA program of an ``mmv`` visual backbone, with its weights."""
    from mmv.models.s3dg import S3DG
    from mmv.models.tsm_resnet import TSMResNetV2

    if isinstance(backbone, TSMResNetV2):
        params = jax.device_put(tsm_params_from_torch(backbone))
        fraction = backbone.units[0][0].shift_fraction
        return lambda video: tsm_resnet(params, video, fraction=fraction)
    if isinstance(backbone, S3DG):
        params = jax.device_put(s3dg_params_from_torch(backbone))
        return lambda video: s3dg(params, video)
    raise TypeError(f"no XLA program for {type(backbone).__name__}")


def check_against_official_outputs() -> dict[str, float]:
    """Max abs error / max |reference| of each XLA program against the official ``vid_repr`` of the fixtures."""
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import mmv
    from mmv.convert.released import convert_checkpoint
    from official_params import MODEL_NAMES, io_path, make_official_params, tree_path
    from released_pickle import write_released_checkpoint

    errors = {}
    for name in MODEL_NAMES:
        with tempfile.TemporaryDirectory() as tmp:
            params, state = make_official_params(tree_path(name))
            pickle_path = write_released_checkpoint(params, state, Path(tmp) / f"mmv_{name}.pkl")
            convert_checkpoint(pickle_path, Path(tmp) / "converted")
            model = mmv.load(Path(tmp) / "converted")
        io = np.load(io_path(name))
        out = np.asarray(program_for(model.video_backbone)(jax.device_put(io["video"])))
        errors[name] = float(np.abs(out - io["vid_repr"]).max() / np.abs(io["vid_repr"]).max())
        print(f"{name:<14} clip {tuple(io['video'].shape)}: XLA program vs official vid_repr, "
              f"max abs error / max |reference| = {errors[name]:.1e}", flush=True)
    return errors


if __name__ == "__main__":
    check_against_official_outputs()
