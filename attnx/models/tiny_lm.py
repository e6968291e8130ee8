"""A tiny language model around any attention module: the zoo's end-to-end harness."""

from __future__ import annotations

from typing import Callable

from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, attention: nn.Module, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    """input_ids [B, N] int64 → logits [B, N, vocab]: embedding, blocks, norm, head."""

    def __init__(self, make_attention: Callable[[int], nn.Module], *, vocab_size: int = 256, dim: int = 64,
                 layers: int = 2):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(Block(dim, make_attention(dim)) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
