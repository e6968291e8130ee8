"""FLASH (Hua et al. 2022): a gated attention unit whose attention is mixed chunk attention.

U = silu(x W_u), V = silu(x W_v) [B, N, E], Z = silu(x W_z) [B, N, s]; four per-dimension
scale/offset pairs of Z give the quadratic and linear queries and keys; the output is
(U ⊙ MixedChunkAttention(...)) W_o. Single head: the op sees [B, 1, N, ·].
"""

from __future__ import annotations

import torch
from torch import nn

from attnx.ops import mixed_chunk_attention as spec
from attnx.ops import torch_ops  # noqa: F401  (registers torch.ops.attnx.*)


class ScaleOffset(nn.Module):
    """z [..., s] → heads × [..., s]: per-dimension γ_h ⊙ z + β_h, one pair per head."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(heads, dim) * 0.02 + 1)
        self.beta = nn.Parameter(torch.zeros(heads, dim))

    def forward(self, z):
        return (z.unsqueeze(-2) * self.gamma + self.beta).unbind(-2)


class FLASH(nn.Module):
    """x [B, N, dim] → [B, N, dim]; expansion E = `expansion`·dim, shared key size s = `qk_dim`."""

    def __init__(self, dim: int, *, qk_dim: int = 32, expansion: int = 2, **attrs):
        super().__init__()
        self.attrs = spec.SPEC.resolve(attrs)
        self.hidden = expansion * dim
        self.uv = nn.Linear(dim, 2 * self.hidden)
        self.z = nn.Linear(dim, qk_dim)
        self.qk = ScaleOffset(qk_dim, 4)
        self.out = nn.Linear(self.hidden, dim)

    @property
    def causal(self) -> bool:
        return self.attrs["causal"]

    def forward(self, x):
        u, v = nn.functional.silu(self.uv(x)).chunk(2, -1)
        quad_q, quad_k, lin_q, lin_k = (t.unsqueeze(1) for t in self.qk(nn.functional.silu(self.z(x))))
        y = torch.ops.attnx.mixed_chunk_attention(quad_q, quad_k, lin_q, lin_k, v.unsqueeze(1), **self.attrs)
        return self.out(u * y.squeeze(1))
