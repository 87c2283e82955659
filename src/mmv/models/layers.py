"""Layers shared by the backbones: TF/XLA 'SAME' padding, and the batch norm the official models use.

The official models are Haiku modules whose convolutions and pools all use padding='SAME'. For a stride-2 layer or
an even kernel XLA pads *asymmetrically*, with the extra row/column at the end, so PyTorch's symmetric
``padding=k // 2`` shifts every feature map by one pixel and the released weights no longer reproduce the released
outputs. These layers compute the XLA padding from the input size at call time.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import winograd

# Haiku BatchNorm(decay_rate=0.9, eps=1e-5) in every official module. Haiku's decay 0.9 is PyTorch's momentum 0.1.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def autograd_needs(x: torch.Tensor) -> bool:
    """Whether autograd records ops on ``x``: then the layers keep their ops out of place (an in-place write would
    overwrite a value some backward needs); otherwise (inference) they write in place and skip allocations."""
    return torch.is_grad_enabled() and x.requires_grad


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one axis for TF/XLA 'SAME': output size ceil(size / stride), extra pad at the end."""
    effective_kernel = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective_kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pads the trailing ``len(kernel)`` axes of ``x`` as XLA's 'SAME' would."""
    pads: list[int] = []
    spatial = x.shape[-len(kernel):]
    # F.pad takes the last axis first.
    for size, k, s in reversed(list(zip(spatial, kernel, stride))):
        pads.extend(same_padding(int(size), k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


def _tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(value)


class _SameConvNd(nn.Module):
    """Conv with 'SAME' padding. Symmetric pads go to the convolution itself (no copy); asymmetric ones (even kernels,
    strides) go through F.pad first."""

    conv_cls: type[nn.Module]
    ndim: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = _tuple(kernel_size, self.ndim)
        self.stride = _tuple(stride, self.ndim)
        self.conv = self.conv_cls(in_channels, out_channels, self.kernel_size, self.stride, bias=bias)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.conv.bias

    def conv_with(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The 'SAME' convolution of ``x`` with the given weight and bias (used by the BN-folded inference path)."""
        if self.ndim == 3 and x.device.type == "cpu":
            out = _separable_conv3d_as_2d(x, weight, bias, self.kernel_size, self.stride)
            if out is not None:
                return out
        return _conv_same(x, weight, bias, self.kernel_size, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_with(x, self.conv.weight, self.conv.bias)


def _conv_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel: Sequence[int],
               stride: Sequence[int]) -> torch.Tensor:
    """F.conv2d/conv3d with 'SAME' padding over the trailing ``len(kernel)`` axes."""
    pads = [same_padding(int(n), k, s) for n, k, s in zip(x.shape[-len(kernel):], kernel, stride)]
    conv_fn = F.conv3d if len(kernel) == 3 else F.conv2d
    if all(before == after for before, after in pads):
        return conv_fn(x, weight, bias, tuple(stride), [before for before, _ in pads])
    return conv_fn(pad_same(x, kernel, stride), weight, bias, tuple(stride))


def _separable_conv3d_as_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor | None:
    """A (1,kh,kw) or (kt,1,1) convolution of a channels-last ``[B, C, T, H, W]`` clip as a 2D convolution of a view.

    Frames of a channels-last clip are channels-last images, so a spatial kernel is a 2D convolution of the
    ``[B*T, C, H, W]`` view; a temporal one is a (kt, 1) convolution of the ``[B, C, T, H*W]`` view. Both views and
    the outputs' views back are free. Why: on CPU, PyTorch sends small-batch 3D convolutions to a slow im2col path
    and oneDNN's 2D kernels beat its 3D ones; S3D-G is almost entirely such separable kernels. Other inputs are
    made channels-last first. Returns None for any other kernel.
    """
    (kt, kh, kw), (st, sh, sw) = kernel, stride
    if not (kt == 1 and st == 1) and not (kh == kw == sh == sw == 1):
        return None
    x = x.contiguous(memory_format=torch.channels_last_3d)  # a no-op on the backbones' activations
    b, c, t, h, w = x.shape
    if kt == 1 and st == 1:
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        out = _conv_same(frames, weight[:, :, 0], bias, (kh, kw), (sh, sw))
        return out.reshape(b, t, *out.shape[1:]).permute(0, 2, 1, 3, 4)
    out = _conv_same(x.reshape(b, c, t, h * w), weight[:, :, :, :, 0], bias, (kt, 1), (st, 1))
    return out.reshape(b, out.shape[1], out.shape[2], h, w)


class Conv2dSame(_SameConvNd):
    conv_cls = nn.Conv2d
    ndim = 2


class Conv3dSame(_SameConvNd):
    conv_cls = nn.Conv3d
    ndim = 3


def folded_conv_bn(conv: _SameConvNd, bn: nn.modules.batchnorm._BatchNorm,
                   weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of one convolution equal to ``bn(conv(x))`` with the BN's running statistics."""
    weight = conv.conv.weight if weight is None else weight
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    folded = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    bias = bn.bias - bn.running_mean * scale
    if conv.conv.bias is not None:
        bias = bias + conv.conv.bias * scale
    return folded, bias


def uses_batch_statistics(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """True when ``bn`` normalises with the batch's statistics (training mode, or no running statistics)."""
    return bn.training or bn.running_mean is None


def conv_bn(conv: _SameConvNd, bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
            weight: torch.Tensor | None = None, *, relu: bool = False) -> torch.Tensor:
    """``bn(conv(x))``, then a ReLU when ``relu``; at inference the BN is folded into the convolution's weight and
    bias (one pass, no BN).

    Folding changes results only by float rounding (about 1e-7 relative). In training mode, or when the BN has no
    running statistics, the two ops run as they are, so batch statistics and running averages behave as usual.
    ``weight`` replaces the convolution's own weight (a function of it, e.g. with input channels permuted).
    """
    if uses_batch_statistics(bn):
        out = bn(conv.conv_with(x, conv.conv.weight if weight is None else weight, conv.conv.bias))
        return torch.relu_(out) if relu else out  # in place: the BN backward does not read its output
    if weight is None and not torch.is_grad_enabled() and winograd.applies(x, conv.conv.weight, conv.stride):
        return winograd.conv3x3(x, *_winograd_weight_and_bias(conv, bn), relu=relu)  # the ReLU in its last pass
    out = conv.conv_with(x, *folded_conv_bn(conv, bn, weight))
    return torch.relu_(out) if relu else out  # in place: a convolution's backward does not read its output


def _winograd_weight_and_bias(conv: _SameConvNd,
                              bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The Winograd-transformed BN-folded weight and the folded bias, cached on ``conv`` until any of the tensors
    they come from changes (new storage or an in-place write, e.g. ``load_state_dict``)."""
    sources = (conv.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    try:
        key = tuple((t.data_ptr(), t._version) for t in sources)
    except RuntimeError:  # tensors created under inference_mode have no version counter: no caching
        key = None
    cached = conv.__dict__.get("_winograd_cache")
    if key is not None and cached is not None and cached[0] == key:
        return cached[1], cached[2]
    folded, bias = folded_conv_bn(conv, bn)
    transformed = winograd.transform_weight(folded)
    if key is not None:
        conv.__dict__["_winograd_cache"] = (key, transformed, bias)  # a plain attribute: not in the state dict
    return transformed, bias


class MaxPoolSame(nn.Module):
    """Max pool with 'SAME' padding (XLA pads with -inf, so padded cells never win).

    Training (autograd recording): ``max_pool{2,3}d`` of the -inf padded input. Inference: computed separably, one
    axis at a time (a max over a box is the max of per-axis maxima), each axis as the maximum of k strided slices of
    the input. A window cell that falls in the padding is simply left out of the maximum, so nothing is padded or
    copied, and every slice is a large strided view that ``torch.maximum`` reads directly. On the channels-last
    activations of the backbones this is about twice as fast as ``max_pool3d`` (which also computes indices), and
    several times faster than ``max_pool3d`` on channels-first tensors.
    """

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if autograd_needs(x):
            return self._pool_for_autograd(x)
        first_axis = x.ndim - len(self.kernel_size)
        for offset, (k, s) in enumerate(zip(self.kernel_size, self.stride)):
            if k > 1 or s > 1:
                x = _max_pool_axis(x, first_axis + offset, k, s)
        return x

    def _pool_for_autograd(self, x: torch.Tensor) -> torch.Tensor:
        """``max_pool{2,3}d`` of the -inf padded input. Its backward scatters into the saved argmax indices; the
        backward of the in-place slice maxima would instead cost a masked copy of the whole input per slice
        (a third of a tiny S3D-G training step)."""
        padded = pad_same(x, self.kernel_size, self.stride, value=float("-inf"))
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(self.kernel_size)]
        return pool(padded, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


def _max_pool_axis(x: torch.Tensor, dim: int, kernel: int, stride: int) -> torch.Tensor:
    """'SAME' max pool of ``x`` along ``dim`` (inference: maxima written in place): output i is the max of inputs
    i*stride - before + j, j < kernel, over those inside the input."""
    n = x.shape[dim]
    before, after = same_padding(n, kernel, stride)
    out_len = -(-n // stride)
    # Offset j = before reads input i*stride, inside the input for every output i: the maximum starts from it.
    base = x.narrow(dim, 0, (out_len - 1) * stride + 1)[_every(dim, x.ndim, stride)]
    result = None
    for j in range(kernel):
        if j == before:
            continue
        shift = j - before  # output i reads input i*stride + shift
        first = max(0, -(-(-shift) // stride))  # smallest i with i*stride + shift >= 0
        last = min(out_len - 1, (n - 1 - shift) // stride)  # largest i with i*stride + shift <= n - 1
        if last < first:
            continue
        count = last - first + 1
        window = x.narrow(dim, first * stride + shift, (count - 1) * stride + 1)[_every(dim, x.ndim, stride)]
        if result is None:
            # The first maximum writes the result directly (no copy of the base first); outputs this offset
            # does not reach take the base as it is.
            result = torch.empty_like(base, memory_format=torch.preserve_format)
            torch.maximum(base.narrow(dim, first, count), window, out=result.narrow(dim, first, count))
            if first > 0:
                result.narrow(dim, 0, first).copy_(base.narrow(dim, 0, first))
            if last < out_len - 1:
                result.narrow(dim, last + 1, out_len - 1 - last).copy_(base.narrow(dim, last + 1, out_len - 1 - last))
        else:
            target = result.narrow(dim, first, count)
            torch.maximum(target, window, out=target)
    return base.clone(memory_format=torch.preserve_format) if result is None else result


def _every(dim: int, ndim: int, stride: int) -> tuple[slice, ...]:
    """The index that keeps every ``stride``-th element along ``dim``."""
    return (slice(None),) * dim + (slice(None, None, stride),) + (slice(None),) * (ndim - dim - 1)


def batch_norm(num_features: int, dims: int) -> nn.Module:
    """BatchNorm{1,2,3}d with the official eps and momentum (cross-replica BN becomes SyncBatchNorm in training)."""
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    return cls(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)
