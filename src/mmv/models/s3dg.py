"""S3D-G: separable 3D convolutions with self-gating (Xie et al., ECCV 2018), as in MMV's released models.

A faithful port of the official MMV S3D-G (``mmv/models/s3d.py``): Inception-v1 layout, separable units (spatial
1xkxk then temporal kx1x1, each followed by BN and ReLU) and self-gating from ``Conv2d_2c_3x3`` on, 'SAME'
padding everywhere, and the space-to-depth stem of the released weights (2x2x2 blocks of the RGB clip folded into
24 channels, then a (2,4,4) convolution). Public input: raw RGB clips ``[B, T, H, W, 3]`` in [0, 1]; the model
folds them itself.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ._registry import register_backbone
from .layers import (Conv3dSame, MaxPoolSame, autograd_needs, batch_norm, conv_bn, folded_conv_bn,
                     uses_batch_statistics)

# Output channels of the six convolutions of each Inception block:
# (branch0 1x1, branch1 1x1, branch1 3x3, branch2 1x1, branch2 3x3, branch3 1x1 after the max pool).
INCEPTION_CHANNELS: "OrderedDict[str, tuple[int, ...]]" = OrderedDict(
    Mixed_3b=(64, 96, 128, 16, 32, 32),
    Mixed_3c=(128, 128, 192, 32, 96, 64),
    Mixed_4b=(192, 96, 208, 16, 48, 64),
    Mixed_4c=(160, 112, 224, 24, 64, 64),
    Mixed_4d=(128, 128, 256, 24, 64, 64),
    Mixed_4e=(112, 144, 288, 32, 64, 64),
    Mixed_4f=(256, 160, 320, 32, 128, 128),
    Mixed_5b=(256, 160, 320, 32, 128, 128),
    Mixed_5c=(384, 192, 384, 48, 128, 128),
)


@dataclass(frozen=True)
class S3DGConfig:
    width_mult: float = 1.0  # scales every channel count (1.0 = the released network)
    space_to_depth: bool = True  # the released weights expect the (2,4,4) stem on 2x2x2-folded input
    first_temporal_kernel_size: int = 7  # temporal kernel of the 7x7 stem without space-to-depth
    temporal_kernel_size: int = 3  # temporal kernel of the separable units from Conv2d_2c_3x3 on
    self_gating: bool = True  # S3D-G; False gives plain S3D


def _scaled(channels: int, width_mult: float) -> int:
    return max(1, int(round(channels * width_mult)))


class SelfGating(nn.Module):
    """x * sigmoid(W · mean_{T,H,W}(x) + b): a per-channel gate from the clip's global context."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:  # x: [B, C, T, H, W]
        """The gated ``x``, written into ``out`` if given (``out`` may be ``x`` itself, or a slice of a larger
        tensor)."""
        context = x.mean(dim=(2, 3, 4))  # [B, C]
        gate = torch.sigmoid(self.fc(context))[:, :, None, None, None]
        return x * gate if out is None else torch.mul(x, gate, out=out)


class SUnit3D(nn.Module):
    """Conv → BN → ReLU; separable units split a (k,k,k) kernel into (1,k,k) then (k,1,1), each with BN and ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        separable: bool = False,
        gating: bool = False,
    ) -> None:
        super().__init__()
        kt, kh, kw = kernel
        st, sh, sw = stride
        if separable and kt != 1:
            self.convs = nn.ModuleList(
                [
                    Conv3dSame(in_channels, out_channels, (1, kh, kw), (1, sh, sw)),
                    Conv3dSame(out_channels, out_channels, (kt, 1, 1), (st, 1, 1)),
                ]
            )
        else:
            self.convs = nn.ModuleList([Conv3dSame(in_channels, out_channels, kernel, stride)])
        self.bns = nn.ModuleList([batch_norm(out_channels, 3) for _ in self.convs])
        self.gating = SelfGating(out_channels) if gating else None
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The unit's output, written into ``out`` if given (inference only: e.g. a slice of the block output)."""
        for conv, bn in zip(self.convs, self.bns):
            x = conv_bn(conv, bn, x, relu=True)
        return self.gate(x, out)

    def gate(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The self-gating of this unit on ``x`` (this unit's own ReLU output), if any, written into ``out`` if given.

        Without ``out``, the gating runs in place on ``x`` unless autograd needs ``x`` unchanged.
        """
        if out is None and not autograd_needs(x):
            out = x
        if self.gating is not None:
            return self.gating(x, out=out)
        return x if out is None or out is x else out.copy_(x)


class InceptionBlock3D(nn.Module):
    """Four parallel branches concatenated on channels; the 1x1 reductions of branches 1 and 2 are not gated."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], temporal_kernel: int, gating: bool) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        tk = temporal_kernel
        self.branch_0 = SUnit3D(in_channels, c0, gating=gating)
        self.branch_1a = SUnit3D(in_channels, c1a)
        self.branch_1b = SUnit3D(c1a, c1b, (tk, 3, 3), separable=True, gating=gating)
        self.branch_2a = SUnit3D(in_channels, c2a)
        self.branch_2b = SUnit3D(c2a, c2b, (tk, 3, 3), separable=True, gating=gating)
        self.branch_3_pool = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.branch_3 = SUnit3D(in_channels, c3, gating=gating)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch_0, branch_1a, branch_2a = self.pointwise_branches(x)
        if autograd_needs(x):
            return torch.cat([self.branch_0.gate(branch_0), self.branch_1b(branch_1a), self.branch_2b(branch_2a),
                              self.branch_3(self.branch_3_pool(x))], dim=1)
        # Inference: each branch writes its last element-wise op (gating) straight into its channels of the
        # output, which saves the concatenation's pass over the block output.
        b, _, t, h, w = branch_0.shape
        out = torch.empty((b, self.out_channels, t, h, w), dtype=branch_0.dtype, device=branch_0.device,
                          memory_format=torch.channels_last_3d)
        parts = out.split([self.branch_0.out_channels, self.branch_1b.out_channels, self.branch_2b.out_channels,
                           self.branch_3.out_channels], dim=1)
        self.branch_0.gate(branch_0, out=parts[0])
        self.branch_1b(branch_1a, out=parts[1])
        self.branch_2b(branch_2a, out=parts[2])
        self.branch_3(self.branch_3_pool(x), out=parts[3])
        return out

    def pointwise_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The three 1x1x1 conv+BN+ReLU that read the block input (gating of branch 0 not applied yet).

        At inference they run as one convolution with the three BN-folded weights stacked: the input is read once
        and one larger matrix product replaces three small ones.
        """
        units = (self.branch_0, self.branch_1a, self.branch_2a)
        if any(uses_batch_statistics(unit.bns[0]) for unit in units):
            return tuple(conv_bn(unit.convs[0], unit.bns[0], x, relu=True) for unit in units)
        folded = [folded_conv_bn(unit.convs[0], unit.bns[0]) for unit in units]
        weight = torch.cat([w for w, _ in folded])
        bias = torch.cat([b for _, b in folded])
        out = torch.relu_(self.branch_0.convs[0].conv_with(x, weight, bias))
        return out.split([w.shape[0] for w, _ in folded], dim=1)


def space_to_depth(video: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W, C] → [B, T/2, H/2, W/2, 8C], channel = ((dt*2 + dh)*2 + dw)*C + c (the released layout)."""
    b, t, h, w, c = video.shape
    if t % 2 or h % 2 or w % 2:
        raise ValueError(f"space-to-depth needs even T, H and W, got a clip of shape {tuple(video.shape)}")
    x = video.reshape(b, t // 2, 2, h // 2, 2, w // 2, 2, c)
    x = x.permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, t // 2, h // 2, w // 2, 8 * c)


class S3DG(nn.Module):
    """S3D-G video backbone. ``forward(video [B,T,H,W,3])`` → ``[B, 1024 * width_mult]`` (mean over T, H, W)."""

    def __init__(self, cfg: S3DGConfig = S3DGConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        ch = lambda c: _scaled(c, cfg.width_mult)  # noqa: E731
        tk = cfg.temporal_kernel_size
        if cfg.space_to_depth:
            self.conv1 = SUnit3D(24, ch(64), (2, 4, 4), (1, 1, 1))
        else:
            self.conv1 = SUnit3D(3, ch(64), (cfg.first_temporal_kernel_size, 7, 7), (2, 2, 2))
        self.pool2 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.conv2b = SUnit3D(ch(64), ch(64))
        self.conv2c = SUnit3D(ch(64), ch(192), (tk, 3, 3), separable=True, gating=cfg.self_gating)
        self.pool3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        blocks: dict[str, nn.Module] = {}
        in_channels = ch(192)
        for name, channels in INCEPTION_CHANNELS.items():
            if name == "Mixed_4b":
                blocks["MaxPool_4a_3x3"] = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                blocks["MaxPool_5a_2x2"] = MaxPoolSame((2, 2, 2), (2, 2, 2))
            block = InceptionBlock3D(in_channels, tuple(ch(c) for c in channels), tk, cfg.self_gating)
            blocks[name] = block
            in_channels = block.out_channels
        self.blocks = nn.ModuleDict(blocks)
        self.num_features = in_channels
        # NOTE: channels_last_3d weights: the folded clip is already laid out channels-last, so oneDNN's
        # convolutions skip a layout reorder per call and the max pools take their fast channels-last kernel
        # (benchmarks/bench_models.py).
        self.to(memory_format=torch.channels_last_3d)

    def fold_input(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] in [0, 1] → the channels-first tensor the stem takes ([B, 24, T/2, H/2, W/2] with s2d)."""
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"S3D-G expects RGB clips [B, T, H, W, 3], got shape {tuple(video.shape)}")
        if self.cfg.space_to_depth:
            if video.shape[1] == 1:
                # A single frame (e.g. a deflated network on an image): as a static 2-frame clip, the folded
                # channels for dt=0 and dt=1 are equal, which is what the released stem expects.
                video = video.expand(-1, 2, -1, -1, -1)
            video = space_to_depth(video)
        return video.permute(0, 4, 1, 2, 3)

    def forward_endpoints(self, video: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """All block outputs (channels-first), named as in the official model, for debugging and deflation tests."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.fold_input(video)
        for name, layer in (
            ("Conv2d_1a_7x7", self.conv1),
            ("MaxPool_2a_3x3", self.pool2),
            ("Conv2d_2b_1x1", self.conv2b),
            ("Conv2d_2c_3x3", self.conv2c),
            ("MaxPool_3a_3x3", self.pool3),
            *self.blocks.items(),
        ):
            x = layer(x)
            out[name] = x
        return out

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] → last feature map [B, C, T', H', W']."""
        x = self.fold_input(video)
        x = self.pool3(self.conv2c(self.conv2b(self.pool2(self.conv1(x)))))
        for block in self.blocks.values():
            x = block(x)
        return x

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.forward_features(video).mean(dim=(2, 3, 4))

    @torch.no_grad()
    def deflate_(self) -> None:
        """Turns the network into an image network in place: every 3D kernel is summed over its temporal axis.

        Run afterwards on single frames ``[B, 1, H, W, 3]``. Equal to the video network on a static clip wherever
        the temporal zero padding of the video network does not reach (see docs/models.md, "Deflation").
        """
        for module in self.modules():
            if isinstance(module, Conv3dSame) and module.kernel_size[0] > 1:
                conv = module.conv
                summed = conv.weight.sum(dim=2, keepdim=True)
                new = nn.Conv3d(conv.in_channels, conv.out_channels, (1, *conv.kernel_size[1:]),
                                (1, *conv.stride[1:]), bias=conv.bias is not None)
                new = new.to(device=summed.device, dtype=summed.dtype)
                new.weight.copy_(summed)
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
                module.conv = new
                module.kernel_size = (1, *module.kernel_size[1:])
                module.stride = (1, *module.stride[1:])
            elif isinstance(module, MaxPoolSame) and len(module.kernel_size) == 3:
                module.kernel_size = (1, *module.kernel_size[1:])
                module.stride = (1, *module.stride[1:])


@register_backbone("s3dg")
def s3dg(**kwargs) -> S3DG:
    """S3D-G video backbone (``S3DGConfig`` fields as keyword arguments)."""
    return S3DG(S3DGConfig(**kwargs))
