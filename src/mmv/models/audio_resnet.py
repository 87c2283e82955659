"""Audio ResNetV2 on a log-mel spectrogram, as MMV's audio backbone (a pre-activation ResNet, He et al. 2016).

The spectrogram ``[B, T', F]`` (time frames x mel bins) is one grey image: 7x7/2 stem, 3x3/2 max pool, four stages
of pre-activation blocks, a final BN+ReLU and the mean over time and frequency. ResNet50 (bottleneck blocks,
2048-d output) is the released audio model; 18 and 34 use basic blocks (512-d output), 101 bottleneck blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._registry import register_backbone
from .layers import Conv2dSame, MaxPoolSame, batch_norm, conv_bn

BLOCKS_PER_DEPTH = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@dataclass(frozen=True)
class AudioResNetConfig:
    depth: int = 50
    width_mult: float = 1.0
    blocks: tuple[int, ...] | None = None  # overrides the blocks per stage given by depth (tiny models)
    bottleneck: bool | None = None  # default: depth >= 50
    base_channels: int = 64


class BottleneckBlockV2(nn.Module):
    """BN → ReLU → (shortcut conv) → conv1x1 → BN → ReLU → conv3x3(stride) → BN → ReLU → conv1x1, + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_projection: bool) -> None:
        super().__init__()
        mid = out_channels // 4
        self.bn_0 = batch_norm(in_channels, 2)
        self.shortcut_conv = Conv2dSame(in_channels, out_channels, 1, stride) if use_projection else None
        self.convs = nn.ModuleList(
            [Conv2dSame(in_channels, mid, 1, 1), Conv2dSame(mid, mid, 3, stride), Conv2dSame(mid, out_channels, 1, 1)]
        )
        self.bns = nn.ModuleList([batch_norm(mid, 2), batch_norm(mid, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = torch.relu(self.bn_0(x))
        shortcut = self.shortcut_conv(preact) if self.shortcut_conv is not None else x
        net = preact
        for conv, bn in zip(self.convs[:-1], self.bns):
            net = conv_bn(conv, bn, net, relu=True)
        return shortcut + self.convs[-1](net)


class BasicBlockV2(nn.Module):
    """BN → ReLU → (shortcut conv) → conv3x3(stride) → BN → ReLU → conv3x3, + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_projection: bool) -> None:
        super().__init__()
        self.bn_0 = batch_norm(in_channels, 2)
        self.shortcut_conv = Conv2dSame(in_channels, out_channels, 1, stride) if use_projection else None
        self.convs = nn.ModuleList([Conv2dSame(in_channels, out_channels, 3, stride),
                                    Conv2dSame(out_channels, out_channels, 3, 1)])
        self.bns = nn.ModuleList([batch_norm(out_channels, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = torch.relu(self.bn_0(x))
        shortcut = self.shortcut_conv(preact) if self.shortcut_conv is not None else x
        net = conv_bn(self.convs[0], self.bns[0], preact, relu=True)
        return shortcut + self.convs[1](net)


class AudioResNetV2(nn.Module):
    """``forward(spectrogram [B, T', F] or [B, T', F, 1])`` → ``[B, num_features]``."""

    def __init__(self, cfg: AudioResNetConfig = AudioResNetConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        blocks = cfg.blocks or BLOCKS_PER_DEPTH[cfg.depth]
        bottleneck = cfg.depth >= 50 if cfg.bottleneck is None else cfg.bottleneck
        block_cls = BottleneckBlockV2 if bottleneck else BasicBlockV2
        stem = int(cfg.base_channels * cfg.width_mult)
        self.initial_conv = Conv2dSame(1, stem, 7, 2)
        self.pool = MaxPoolSame((3, 3), (2, 2))
        groups = []
        in_channels = stem
        for i, (num_blocks, stride) in enumerate(zip(blocks, (1, 2, 2, 2))):
            out_channels = stem * (4 if bottleneck else 1) * 2**i
            group = nn.Sequential()
            for j in range(num_blocks):
                # A projection wherever the shape changes (always in the first bottleneck block).
                project = j == 0 and (in_channels != out_channels or stride != 1)
                group.append(block_cls(in_channels, out_channels, stride if j == 0 else 1, project))
                in_channels = out_channels
            groups.append(group)
        self.block_groups = nn.ModuleList(groups)
        self.final_bn = batch_norm(in_channels, 2)
        self.num_features = in_channels

    def forward_features(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """[B, T', F] (or [B, T', F, 1]) → the last feature map after BN+ReLU, [B, C, T'/32, F/32]."""
        if spectrogram.ndim == 4 and spectrogram.shape[-1] == 1:
            spectrogram = spectrogram[..., 0]
        if spectrogram.ndim != 3:
            raise ValueError(
                f"the audio ResNet expects a log-mel spectrogram [B, T', F] or [B, T', F, 1], "
                f"got shape {tuple(spectrogram.shape)}"
            )
        x = self.pool(self.initial_conv(spectrogram[:, None]))
        for group in self.block_groups:
            x = group(x)
        return torch.relu(self.final_bn(x))

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        return self.forward_features(spectrogram).mean(dim=(2, 3))


@register_backbone("audio_resnet")
def audio_resnet(**kwargs) -> AudioResNetV2:
    """Audio ResNetV2 (``AudioResNetConfig`` fields)."""
    if "blocks" in kwargs and kwargs["blocks"] is not None:
        kwargs["blocks"] = tuple(kwargs["blocks"])  # JSON configs give lists
    return AudioResNetV2(AudioResNetConfig(**kwargs))
