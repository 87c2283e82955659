"""Winograd F(4x4, 3x3): the 3x3 stride-1 convolutions of wide ResNet stages at inference on CPU.

A 3x3 convolution computes each 4x4 block of outputs from a 6x6 block of inputs. Winograd's minimal filtering
algorithm (Lavin & Gray, CVPR 2016) does that with 36 multiplications per input and output channel pair instead of
144: input tiles are transformed (``B^T d B``), multiplied channel-wise with the transformed kernel (``G g G^T``,
computed once per weight), and transformed back (``A^T m A``). The channel-wise products are 36 independent matrix
products ``[tiles, C] x [C, K]``, one batched GEMM; the transforms are small fixed matrices applied as batched GEMMs,
one ``[36, 36] x [36, C]`` (``[16, 36] x [36, K]``) product per tile.

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
# Each transform as one matrix: kron(B^T, B^T) maps a flattened 6x6 tile to its transform, kron(A^T, A^T) a
# flattened 6x6 product to its 4x4 outputs. A 36x36 (16x36) matrix keeps the GEMMs efficient, where applying the 6x6
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


def conv3x3(x: torch.Tensor, transformed_weight: torch.Tensor, bias: torch.Tensor | None,
            relu: bool = False) -> torch.Tensor:
    """'SAME' 3x3 stride-1 convolution of a channels-last ``[N, C, H, W]`` batch; channels-last ``[N, K, H, W]`` out,
    followed by a ReLU when ``relu``.

    ``transformed_weight`` comes from :func:`transform_weight`. Equal to ``F.conv2d(x, weight, bias, padding=1)``
    up to float rounding.

    Layout: tile-major. Each tile's 36 transformed values of all C channels sit together (``[tiles, 36, C]``), so
    both transforms are batches of small GEMMs that stream through memory once (``[36, 36] x [36, C]`` per tile,
    twice as fast here as one ``[36, 36] x [36, tiles * C]`` GEMM), and the 36 channel GEMMs read and write that
    layout through strides.
    """
    n, c, h, w = x.shape
    k = transformed_weight.shape[2]
    tiles_h, tiles_w = -(-h // TILE), -(-w // TILE)
    num_tiles = n * tiles_h * tiles_w
    # Zero padding: 1 before (the 'SAME' pad of a 3x3 kernel), and after, enough to complete the last tile.
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1 + TILE * tiles_w - w, 1, 1 + TILE * tiles_h - h))
    s_n, s_h, s_w, s_c = padded.stride()
    # [N, tiles_h, tiles_w, 6, 6, C]: overlapping 6x6 tiles every 4 pixels, a strided view; the reshape copies them
    # into the [tiles, 36, C] layout.
    tiles = padded.as_strided((n, tiles_h, tiles_w, TILE + 2, TILE + 2, c),
                              (s_n, TILE * s_h, TILE * s_w, s_h, s_w, s_c)).reshape(num_tiles, 36, c)
    transformed = torch.matmul(_matrix(_BT_KRON, x), tiles)  # [tiles, 36, C]
    products = torch.empty((num_tiles, 36, k), dtype=x.dtype, device=x.device)
    torch.bmm(transformed.transpose(0, 1), transformed_weight, out=products.transpose(0, 1))  # 36 x [tiles, C][C, K]
    output_transform = _matrix(_AT_KRON, x)
    if bias is None:
        blocks = torch.matmul(output_transform, products)  # [tiles, 16, K]
    else:
        blocks = torch.baddbmm(bias.view(1, 1, k), output_transform.expand(num_tiles, 16, 36), products)
    # [N, th, tw, 4, 4, K] → [N, th, 4, tw, 4, K]: the output pixels, written (with the ReLU) into a channels-last
    # output of whole tiles in one pass, then cropped to H x W where the tiles overhang.
    blocks = blocks.reshape(n, tiles_h, tiles_w, TILE, TILE, k).permute(0, 1, 3, 2, 4, 5)
    if torch.compiler.is_compiling():
        # The functional form: inductor fuses it into one pass, and cannot replay the write into a view below.
        pixels = blocks.reshape(n, tiles_h * TILE, tiles_w * TILE, k)
        out = (pixels.clamp(min=0) if relu else pixels).permute(0, 3, 1, 2)
    else:
        out = torch.empty((n, k, tiles_h * TILE, tiles_w * TILE), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        target = out.permute(0, 2, 3, 1).view(n, tiles_h, TILE, tiles_w, TILE, k)
        if relu:
            torch.clamp(blocks, min=0, out=target)
        else:
            target.copy_(blocks)
    if (h, w) != out.shape[2:]:
        out = out[:, :, :h, :w].contiguous(memory_format=torch.channels_last)
    return out


_matrices: dict[tuple, torch.Tensor] = {}


def _matrix(matrix64: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``matrix64`` in ``like``'s dtype and device, converted once per (matrix, dtype, device)."""
    key = (id(matrix64), like.dtype, like.device)
    if key not in _matrices:
        _matrices[key] = matrix64.to(dtype=like.dtype, device=like.device)
    return _matrices[key]
