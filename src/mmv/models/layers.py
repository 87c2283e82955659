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
    """Conv with 'SAME' padding; symmetric paddings go to the conv itself (cheaper), asymmetric ones to F.pad."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad_same(x, self.kernel_size, self.stride))


class Conv2dSame(_SameConvNd):
    conv_cls = nn.Conv2d
    ndim = 2


class Conv3dSame(_SameConvNd):
    conv_cls = nn.Conv3d
    ndim = 3


class MaxPoolSame(nn.Module):
    """Max pool with 'SAME' padding: XLA pads with -inf, so padded cells never win."""

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, value=float("-inf"))
        pool = F.max_pool3d if len(self.kernel_size) == 3 else F.max_pool2d
        return pool(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


def batch_norm(num_features: int, dims: int) -> nn.Module:
    """BatchNorm{1,2,3}d with the official eps and momentum (cross-replica BN becomes SyncBatchNorm in training)."""
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    return cls(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)
