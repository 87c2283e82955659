"""Projection heads g_{m→s}: backbone outputs to the shared embedding spaces.

A head is ``linear`` (one Linear with bias) or ``mlp@D[@D...]`` (hidden Linear+bias → BN → ReLU per D, then a final
Linear without bias, as the official ``EmbeddingModule``), optionally followed by a BN ("bn after projection").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import batch_norm


@dataclass(frozen=True)
class HeadConfig:
    mode: str = "linear"  # "linear" or "mlp@D[@D...]"
    bn_out: bool = False  # BN after the final projection


def parse_head_mode(mode: str) -> list[int]:
    """Hidden sizes of a head mode: ``"linear"`` → ``[]``, ``"mlp@512@256"`` → ``[512, 256]``."""
    if mode == "linear":
        return []
    parts = mode.split("@")
    if parts[0] != "mlp" or len(parts) < 2 or not all(p.isdigit() and int(p) > 0 for p in parts[1:]):
        raise ValueError(f"head mode must be 'linear' or 'mlp@D[@D...]' with positive sizes, got {mode!r}")
    return [int(p) for p in parts[1:]]


class EmbeddingHead(nn.Module):
    """``forward(x [..., in_dim])`` → ``[..., out_dim]``; leading dims are flattened for the BNs and restored."""

    def __init__(self, in_dim: int, out_dim: int, cfg: HeadConfig = HeadConfig()) -> None:
        super().__init__()
        hidden = parse_head_mode(cfg.mode)
        self.cfg = cfg
        self.hidden = nn.ModuleList()
        self.hidden_bns = nn.ModuleList()
        for size in hidden:
            self.hidden.append(nn.Linear(in_dim, size))
            self.hidden_bns.append(batch_norm(size, 1))
            in_dim = size
        # The official MLP head drops the final bias (a BN or nothing follows); the linear head keeps it.
        self.proj = nn.Linear(in_dim, out_dim, bias=not hidden)
        self.bn_out = batch_norm(out_dim, 1) if cfg.bn_out else None
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        for linear, bn in zip(self.hidden, self.hidden_bns):
            x = torch.relu(bn(linear(x)))
        x = self.proj(x)
        if self.bn_out is not None:
            x = self.bn_out(x)
        return x.reshape(*lead, self.out_dim)
