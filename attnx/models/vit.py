"""A tiny ViT: patch embedding, 2-D RoPE, linear attention (RoFormer's rotary linear attention).

images [B, C, H, W] (H, W multiples of the patch size) → patches [B, N = H/p · W/p, dim] →
blocks → mean over patches → class logits [B, classes]. Attention per head, non-causal:

  y_i = (R_i φ(q_i))ᵀ Σ_j (R_j φ(k_j)) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps)

with φ = elu+1 and R the 2-D rotation of patch i: the rotated product depends on relative
positions, and the denominator stays positive because it is taken before the rotation. Two
`attnx::LinearAttention` calls (identity features, no normalisation) give numerator and
denominator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnx.models.rope import Rotary
from attnx.ops import linear_attention as la


def reference(q, k, v, rotated_q, rotated_k, *, eps: float = 1e-6):
    """Float64 definition, dense. q, k [B, H, N, D] before φ; rotated_q/k = R φ(q), R φ(k) → [B, H, N, E]."""
    phi = la.FEATURE_MAPS["elu"]
    num = torch.einsum("bhnd,bhmd->bhnm", rotated_q.double(), rotated_k.double()) @ v.double()
    den = torch.einsum("bhnd,bhmd->bhnm", phi(q.double()), phi(k.double())).sum(-1, keepdim=True)
    return num / (den + eps)


class RotaryLinearAttention(nn.Module):
    """x [B, N, dim] on a patch grid (rows, cols) → [B, N, dim]."""

    def __init__(self, dim: int, heads: int, *, eps: float = 1e-6):
        super().__init__()
        self.heads, self.head_dim, self.eps = heads, dim // heads, eps
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.rotary = Rotary(self.head_dim, two_d=True)
        self.plain = la.SPEC.resolve({"feature_map": "identity", "normalize": False})

    def forward(self, x, grid: tuple[int, int]):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        phi = la.FEATURE_MAPS["elu"]
        fq, fk = phi(q), phi(k)
        rq, rk = self.rotary(fq, fk, grid)
        num = torch.ops.attnx.linear_attention(rq, rk, v, **self.plain)[0]
        den = torch.ops.attnx.linear_attention(fq, fk, torch.ones_like(v[..., :1]), **self.plain)[0]
        return self.out((num / (den + self.eps)).transpose(1, 2).flatten(2))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), RotaryLinearAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x, grid):
        x = x + self.attention(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """images [B, C, H, W] → logits [B, classes]."""

    def __init__(self, *, patch: int = 4, channels: int = 3, dim: int = 64, heads: int = 4, layers: int = 2,
                 classes: int = 10):
        super().__init__()
        self.patch, self.channels = patch, channels
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, images):
        x = self.embed(images)                                  # [B, dim, rows, cols]
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)                        # [B, N, dim]
        for block in self.blocks:
            x = block(x, grid)
        return self.head(self.norm(x).mean(1))


def patch_grid(n: int) -> tuple[int, int]:
    """(rows, cols) of an image of about n patches: rows = ⌊√n⌋, cols = ⌈n / rows⌉."""
    rows = max(1, math.isqrt(n))
    return rows, -(-n // rows)


def example_images(module: TinyViT, batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor]:
    """Images [batch, C, rows·p, cols·p] holding about `length` patches (`patch_grid`)."""
    rows, cols = patch_grid(length)
    p = module.patch
    return (torch.randn(batch, module.channels, rows * p, cols * p, generator=generator),)
