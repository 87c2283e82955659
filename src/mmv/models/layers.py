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

# Haiku BatchNorm(decay_rate=0.9, eps=1e-5) in every official module. Haiku's decay 0.9 is PyTorch's momentum 0.1.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


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
        spatial = x.shape[-self.ndim:]
        pads = [same_padding(int(n), k, s) for n, k, s in zip(spatial, self.kernel_size, self.stride)]
        conv_fn = F.conv3d if self.ndim == 3 else F.conv2d
        if all(before == after for before, after in pads):
            return conv_fn(x, weight, bias, self.stride, [before for before, _ in pads])
        return conv_fn(pad_same(x, self.kernel_size, self.stride), weight, bias, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_with(x, self.conv.weight, self.conv.bias)


class Conv2dSame(_SameConvNd):
    conv_cls = nn.Conv2d
    ndim = 2


class Conv3dSame(_SameConvNd):
    conv_cls = nn.Conv3d
    ndim = 3


def conv_bn(conv: _SameConvNd, bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))``; at inference the BN is folded into the convolution's weight and bias (one pass, no BN).

    Folding changes results only by float rounding (about 1e-7 relative). In training mode, or when the BN has no
    running statistics, the two ops run as they are, so batch statistics and running averages behave as usual.
    """
    if bn.training or bn.running_mean is None:
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.conv.weight * scale.reshape(-1, *([1] * (conv.conv.weight.ndim - 1)))
    bias = bn.bias - bn.running_mean * scale
    if conv.conv.bias is not None:
        bias = bias + conv.conv.bias * scale
    return conv.conv_with(x, weight, bias)


class MaxPoolSame(nn.Module):
    """Max pool with 'SAME' padding (XLA pads with -inf, so padded cells never win).

    Computed separably, one axis at a time, as the maximum of shifted strided slices: a max over a box is the max
    of per-axis maxima, and on CPU this is several times faster than ``max_pool3d`` for the 3x3x3 pools of S3D-G.
    """

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first_axis = x.ndim - len(self.kernel_size)
        for offset, (k, s) in enumerate(zip(self.kernel_size, self.stride)):
            if k == 1 and s == 1:
                continue
            dim = first_axis + offset
            n = x.shape[dim]
            before, after = same_padding(n, k, s)
            if before or after:
                pad = [0, 0] * (x.ndim - dim - 1) + [before, after]
                x = F.pad(x, pad, value=float("-inf"))
            out = -(-n // s)
            index = [slice(None)] * x.ndim
            result = None
            for j in range(k):
                index[dim] = slice(j, j + (out - 1) * s + 1, s)
                window = x[tuple(index)]
                result = window if result is None else torch.maximum(result, window)
            x = result
        return x

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


def batch_norm(num_features: int, dims: int) -> nn.Module:
    """BatchNorm{1,2,3}d with the official eps and momentum (cross-replica BN becomes SyncBatchNorm in training)."""
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    return cls(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)
