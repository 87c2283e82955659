"""TSM-ResNetV2: a pre-activation ResNet with the Temporal Shift Module (Lin et al., ICCV 2019), as in MMV.

A faithful port of the official MMV ``TSMResNetV2`` (``mmv/models/tsm_resnet.py``, 'gpu' mode): frames are run as a
batch of images ``[B*T, C, H, W]``; inside each block's residual branch, after the pre-activation BN+ReLU, 1/8 of
the channels are shifted one frame forward and 1/8 one frame back (zero padded at the clip ends). The official
channel layout differs from the original TSM paper's; see :func:`temporal_shift`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._registry import register_backbone
from .layers import Conv2dSame, MaxPoolSame, autograd_needs, batch_norm, conv_bn

BLOCKS_PER_DEPTH = {18: (2, 2, 2, 2), 26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@dataclass(frozen=True)
class TSMResNetConfig:
    depth: int = 50
    width_mult: float = 1.0  # 1 = TSM-ResNet50, 2 = TSM-ResNet50x2
    channel_shift_fraction: float = 0.125  # 0 switches the shift off (a plain ResNet, used by deflation)
    blocks: tuple[int, ...] | None = None  # overrides the blocks per stage given by depth (tiny models)
    base_channels: int = 64  # stem width before width_mult; stage outputs are 4x, 8x, 16x, 32x this


def temporal_shift(x: torch.Tensor, num_frames: int, fraction: float = 0.125) -> torch.Tensor:
    """The official MMV shift on ``[B*T, C, H, W]`` (batch-major frames).

    With n = int(C * fraction): output channels [0:n] at frame t are the *last* n input channels of frame t+1,
    channels [n:C-n] are unchanged, and channels [C-n:C] are the *first* n input channels of frame t-1; zeros where
    t+1 or t-1 falls outside the clip.
    """
    bt, c, h, w = x.shape
    n = int(c * fraction)
    if n == 0:
        return x
    x = x.reshape(bt // num_frames, num_frames, c, h, w)
    from_next = torch.zeros_like(x[:, :, :n])
    from_next[:, :-1] = x[:, 1:, c - n:]
    from_prev = torch.zeros_like(x[:, :, :n])
    from_prev[:, 1:] = x[:, :-1, :n]
    shifted = torch.cat([from_next, x[:, :, n:c - n], from_prev], dim=2)
    return shifted.reshape(bt, c, h, w)


def shift_in_place_layout(x: torch.Tensor, num_frames: int, n: int, inplace: bool = False) -> torch.Tensor:
    """The temporal shift with every channel kept at its index: ``[B*T, C, H, W]`` (batch-major frames).

    Output channels [0:n] at frame t are input channels [0:n] of frame t-1, channels [C-n:C] are those of frame
    t+1, the rest are unchanged; zeros where t-1 or t+1 falls outside the clip. This is :func:`temporal_shift`
    with its first and last n output channels swapped, so a 1x1 convolution after it computes the same thing as
    after :func:`temporal_shift` once the first and last n input channels of its weight are swapped too
    (:func:`swap_shifted_channels`). Keeping channels in place lets the shift move only the 2n shifted channels,
    and, with ``inplace``, write them into ``x`` itself (inference only: autograd may need ``x`` unchanged).
    Works in either memory format and keeps it.
    """
    bt, c, h, w = x.shape
    clips = x.view(bt // num_frames, num_frames, c, h, w)
    if inplace:
        # The source and destination frames overlap, so copy one frame at a time, each before it is overwritten.
        for t in range(num_frames - 1, 0, -1):
            clips[:, t, :n] = clips[:, t - 1, :n]
        clips[:, 0, :n] = 0
        for t in range(num_frames - 1):
            clips[:, t, c - n:] = clips[:, t + 1, c - n:]
        clips[:, -1, c - n:] = 0
        return x
    out = torch.empty_like(x)
    shifted = out.view(bt // num_frames, num_frames, c, h, w)
    shifted[:, 1:, :n] = clips[:, :-1, :n]
    shifted[:, :1, :n] = 0
    shifted[:, :, n:c - n] = clips[:, :, n:c - n]
    shifted[:, :-1, c - n:] = clips[:, 1:, c - n:]
    shifted[:, -1:, c - n:] = 0
    return out


def swap_shifted_channels(weight: torch.Tensor, n: int) -> torch.Tensor:
    """``weight`` [O, C, ...] with input channels [0:n] and [C-n:C] swapped (see :func:`shift_in_place_layout`)."""
    c = weight.shape[1]
    return torch.cat([weight[:, c - n:], weight[:, n:c - n], weight[:, :n]], dim=1)


class TSMBottleneckBlock(nn.Module):
    """BN → ReLU → (shortcut conv) → shift → conv1x1 → BN → ReLU → conv3x3(stride) → BN → ReLU → conv1x1, + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_projection: bool, shift: float) -> None:
        super().__init__()
        mid = out_channels // 4
        self.shift_fraction = shift
        self.bn_0 = batch_norm(in_channels, 2)
        self.shortcut_conv = Conv2dSame(in_channels, out_channels, 1, stride) if use_projection else None
        self.conv_0 = Conv2dSame(in_channels, mid, 1, 1)
        self.bn_1 = batch_norm(mid, 2)
        self.conv_1 = Conv2dSame(mid, mid, 3, stride)
        self.bn_2 = batch_norm(mid, 2)
        self.conv_2 = Conv2dSame(mid, out_channels, 1, 1)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        preact = torch.relu_(self.bn_0(x))
        # The projection shortcut reads the pre-activation *before* the shift (official layout).
        shortcut = self.shortcut_conv(preact) if self.shortcut_conv is not None else x
        n = int(preact.shape[1] * self.shift_fraction)
        weight_0 = None
        if n:
            # The official layout (temporal_shift) moves every channel; this shift keeps channels in place and
            # swaps the matching weight columns instead: the same result with a quarter of the copying.
            inplace = not autograd_needs(preact)
            preact = shift_in_place_layout(preact, num_frames, n, inplace=inplace)
            weight_0 = swap_shifted_channels(self.conv_0.conv.weight, n)
        residual = conv_bn(self.conv_0, self.bn_1, preact, weight_0, relu=True)
        residual = conv_bn(self.conv_1, self.bn_2, residual, relu=True)
        return self.conv_2(residual).add_(shortcut)


class TSMResNetV2(nn.Module):
    """``forward(video [B, T, H, W, 3])`` → ``[B, 2048 * width_mult]`` (mean over H, W, then over T)."""

    def __init__(self, cfg: TSMResNetConfig = TSMResNetConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        blocks = cfg.blocks or BLOCKS_PER_DEPTH[cfg.depth]
        stem = int(cfg.base_channels * cfg.width_mult)
        self.stem = Conv2dSame(3, stem, 7, 2)
        self.pool = MaxPoolSame((3, 3), (2, 2))
        units = []
        in_channels = stem
        for i, (num_blocks, stride) in enumerate(zip(blocks, (1, 2, 2, 2))):
            out_channels = stem * 4 * 2**i
            unit = nn.ModuleList()
            for j in range(num_blocks):
                unit.append(
                    TSMBottleneckBlock(
                        in_channels, out_channels, stride if j == 0 else 1, j == 0, cfg.channel_shift_fraction
                    )
                )
                in_channels = out_channels
            units.append(unit)
        self.units = nn.ModuleList(units)
        self.final_bn = batch_norm(in_channels, 2)
        self.num_features = in_channels
        # NOTE: channels_last weights: the frames arrive as NHWC already, and oneDNN's convolutions then avoid a
        # layout reorder per call (1.7x faster TSM-50 inference on a 2-core CPU, benchmarks/bench_models.py).
        self.to(memory_format=torch.channels_last)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] → last feature map after the final BN+ReLU, [B*T, C, H', W'] (batch-major)."""
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"TSM-ResNet expects RGB clips [B, T, H, W, 3], got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        x = video.reshape(b * t, *video.shape[2:]).permute(0, 3, 1, 2)
        x = self.pool(self.stem(x))
        for unit in self.units:
            for block in unit:
                x = block(x, t)
        return torch.relu_(self.final_bn(x))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        x = self.forward_features(video).mean(dim=(2, 3))  # [B*T, C]
        return x.reshape(b, t, -1).mean(dim=1)

    def deflate_(self) -> None:
        """Image network in place: the shift off (a plain ResNetV2); run on single frames ``[B, 1, H, W, 3]``."""
        for module in self.modules():
            if isinstance(module, TSMBottleneckBlock):
                module.shift_fraction = 0.0


@register_backbone("tsm_resnet")
def tsm_resnet(**kwargs) -> TSMResNetV2:
    """TSM-ResNetV2 video backbone (``TSMResNetConfig`` fields)."""
    if "blocks" in kwargs and kwargs["blocks"] is not None:
        kwargs["blocks"] = tuple(kwargs["blocks"])  # JSON configs give lists
    return TSMResNetV2(TSMResNetConfig(**kwargs))
