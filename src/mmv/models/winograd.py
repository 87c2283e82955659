"""Winograd F(4x4, 3x3): the 3x3 stride-1 convolutions of wide ResNet stages at inference on CPU.

A 3x3 convolution computes each 4x4 block of outputs from a 6x6 block of inputs. Winograd's minimal filtering
algorithm (Lavin & Gray, CVPR 2016) does that with 36 multiplications per input and output channel pair instead of
144: input tiles are transformed (``B^T d B``), multiplied channel-wise with the transformed kernel (``G g G^T``,
computed once per weight), and transformed back (``A^T m A``). The channel-wise products are 36 independent matrix
products ``[tiles, C] x [C, K]``, one batched GEMM; the transforms are small fixed matrices applied as GEMMs.

Where it pays: oneDNN's direct convolution already runs close to the CPU's peak, so the 4x fewer multiplications
only win once the GEMMs are large enough to outweigh the transforms' memory traffic: in practice when both channel
counts are at least 256 (the last three stages of TSM-ResNet50, every 3x3 of TSM-ResNet50x2 from its second stage).
Below that the direct convolution is kept (``benchmarks/bench_models.py`` prints both).

Accuracy: the transforms have entries up to 8 and fractions of 1/24, so float32 rounding grows by a few times
compared with the direct convolution (about 6e-6 against 1.5e-6 relative to the largest output, measured on random
weights); the released models still match the official outputs to better than 1e-5. ``MMV_WINOGRAD=0`` in the
environment, or :func:`set_enabled`, turns it off.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

# Lavin & Gray's F(4x4, 3x3) matrices (interpolation points 0, ±1, ±2, ∞).
_BT = ((4, 0, -5, 0, 1, 0),
       (0, -4, -4, 1, 1, 0),
       (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0),
       (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0),
      (-1 / 6, -1 / 6, -1 / 6),
      (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0),
       (0, 1, -1, 2, -2, 0),
       (0, 1, 1, 4, 4, 0),
       (0, 1, -1, 8, -8, 1))
TILE = 4  # output pixels per tile side; input tiles are TILE + 2
MIN_CHANNELS = 256  # both input and output channels; below this oneDNN's direct convolution is faster

_enabled = os.environ.get("MMV_WINOGRAD", "1") != "0"
# Both transforms as one GEMM each: kron(B^T, B^T) maps a flattened 6x6 tile to its transform, kron(A^T, A^T) a
# flattened 6x6 product to its 4x4 outputs. A 36x36 (16x36) matrix keeps the GEMM efficient, where applying the 6x6
# factors one axis at a time would give GEMMs of 6 rows that run far below the memory bandwidth.
_BT_KRON = torch.kron(torch.tensor(_BT, dtype=torch.float64), torch.tensor(_BT, dtype=torch.float64))
_AT_KRON = torch.kron(torch.tensor(_AT, dtype=torch.float64), torch.tensor(_AT, dtype=torch.float64))
_G64 = torch.tensor(_G, dtype=torch.float64)


def set_enabled(enabled: bool) -> None:
    """Turns the Winograd path on or off for this process (default: on unless ``MMV_WINOGRAD=0``)."""
    global _enabled
    _enabled = bool(enabled)


def is_enabled() -> bool:
    return _enabled


def applies(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, ...]) -> bool:
    """Whether ``conv2d(x, weight)`` ('SAME', ``stride``) should take the Winograd path: an inference-only CPU float32
    3x3 stride-1 convolution of a channels-last batch with at least :data:`MIN_CHANNELS` channels in and out."""
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.ndim == 4 and tuple(weight.shape[2:]) == (3, 3) and tuple(stride) == (1, 1)
            and weight.shape[0] >= MIN_CHANNELS and weight.shape[1] >= MIN_CHANNELS and weight.shape[1] == x.shape[1]
            and x.is_contiguous(memory_format=torch.channels_last))


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[K, C, 3, 3]`` kernel → ``[36, C, K]``, the ``G g G^T`` of every (k, c) pair (computed in float64)."""
    k, c = weight.shape[:2]
    g = weight.detach().to(torch.float64)
    transformed = torch.einsum("ia,kcab,jb->ijck", _G64.to(g.device), g, _G64.to(g.device))
    return transformed.reshape(36, c, k).to(weight.dtype).contiguous()


def conv3x3(x: torch.Tensor, transformed_weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """'SAME' 3x3 stride-1 convolution of a channels-last ``[N, C, H, W]`` batch; channels-last ``[N, K, H, W]`` out.

    ``transformed_weight`` comes from :func:`transform_weight`. Equal to ``F.conv2d(x, weight, bias, padding=1)``
    up to float rounding.
    """
    n, c, h, w = x.shape
    k = transformed_weight.shape[2]
    tiles_h, tiles_w = -(-h // TILE), -(-w // TILE)
    num_tiles = n * tiles_h * tiles_w
    # Zero padding: 1 before (the 'SAME' pad of a 3x3 kernel), and after, enough to complete the last tile.
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1 + TILE * tiles_w - w, 1, 1 + TILE * tiles_h - h))
    s_n, s_h, s_w, s_c = padded.stride()
    # [6, 6, N, tiles_h, tiles_w, C]: overlapping 6x6 tiles every 4 pixels, a strided view; the reshape copies them
    # into the [36, tiles * C] layout the transform GEMM reads.
    tiles = padded.as_strided((TILE + 2, TILE + 2, n, tiles_h, tiles_w, c),
                              (s_h, s_w, s_n, TILE * s_h, TILE * s_w, s_c)).reshape(36, num_tiles * c)
    transformed = torch.mm(_BT_KRON.to(device=x.device, dtype=x.dtype), tiles)  # [36, tiles * C]
    products = torch.bmm(transformed.view(36, num_tiles, c), transformed_weight)  # [36, tiles, K]
    blocks = torch.mm(_AT_KRON.to(device=x.device, dtype=x.dtype), products.view(36, num_tiles * k))  # [16, tiles*K]
    # [4, 4, N, th, tw, K] → [N, th, 4, tw, 4, K]: the output pixels, written (plus the bias) into a channels-last
    # output of whole tiles in one pass, then cropped to H x W where the tiles overhang.
    blocks = blocks.view(TILE, TILE, n, tiles_h, tiles_w, k).permute(2, 3, 0, 4, 1, 5)
    out = torch.empty((n, k, tiles_h * TILE, tiles_w * TILE), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    target = out.permute(0, 2, 3, 1).view(n, tiles_h, TILE, tiles_w, TILE, k)
    if bias is None:
        target.copy_(blocks)
    else:
        torch.add(blocks, bias, out=target)
    if (h, w) != out.shape[2:]:
        out = out[:, :, :h, :w].contiguous(memory_format=torch.channels_last)
    return out
