"""MMV's text backbone: frozen word embeddings → per-word linear (2048) → ReLU → max over words.

The released model embeds word ids with Google-News word2vec (300-d, vocabulary 65,536) under a stop-gradient. The
word→id vocabulary of the released model was never published: the released text branch only gives meaningful
outputs with word ids from that original vocabulary (see docs/models.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._registry import register_backbone


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 65536
    embedding_dim: int = 300
    sentence_dim: int = 2048
    freeze_embeddings: bool = True  # the paper keeps word2vec frozen


class WordEmbeddingText(nn.Module):
    """``forward(word_ids [..., L])`` → ``[..., sentence_dim]``. Any leading shape (e.g. ``[B, K, L]``) is kept."""

    def __init__(self, cfg: TextConfig = TextConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embedding_dim)
        self.embed.weight.requires_grad_(not cfg.freeze_embeddings)
        # The official Conv1D with kernel 1 is a per-word linear layer.
        self.word_proj = nn.Linear(cfg.embedding_dim, cfg.sentence_dim)
        self.num_features = cfg.sentence_dim

    @torch.no_grad()
    def load_word_vectors(self, vectors: torch.Tensor) -> None:
        """Copies pretrained vectors ``[vocab_size, embedding_dim]`` (e.g. word2vec aligned with a vocabulary)."""
        if tuple(vectors.shape) != tuple(self.embed.weight.shape):
            raise ValueError(
                f"word vectors of shape {tuple(vectors.shape)} do not fit the embedding "
                f"{tuple(self.embed.weight.shape)} (vocab_size, embedding_dim)"
            )
        self.embed.weight.copy_(vectors)

    def forward(self, word_ids: torch.Tensor) -> torch.Tensor:
        if word_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"word_ids must be an integer tensor, got {word_ids.dtype}")
        embedded = self.embed(word_ids.long())
        if self.cfg.freeze_embeddings:
            embedded = embedded.detach()  # stop-gradient, as the official module
        return torch.relu(self.word_proj(embedded)).amax(dim=-2)


@register_backbone("word_embedding")
def word_embedding(**kwargs) -> WordEmbeddingText:
    """Word-embedding text backbone (``TextConfig`` fields)."""
    return WordEmbeddingText(TextConfig(**kwargs))
