"""FLASH (Hua et al. 2022): a gated attention unit whose attention is mixed chunk attention.

U = silu(x W_u), V = silu(x W_v) [B, N, E], Z = silu(x W_z) [B, N, s]; four per-dimension
scale/offset pairs of Z give the quadratic and linear queries and keys; the output is
(U ⊙ MixedChunkAttention(...)) W_o. Single head: the op sees [B, 1, N, ·].
"""

from __future__ import annotations

import torch
from torch import nn

from attnx.ops import mixed_chunk_attention as mc


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
        self.attrs = mc.SPEC.resolve(attrs)
        self.hidden = expansion * dim
        self.uv = nn.Linear(dim, 2 * self.hidden)
        self.z = nn.Linear(dim, qk_dim)
        self.qk = ScaleOffset(qk_dim, 4)
        self.out = nn.Linear(self.hidden, dim)

    @property
    def causal(self) -> bool:
        return self.attrs["causal"]

    def project(self, x):
        """x [B, N, dim] → u [B, N, E]; quad_q, quad_k, lin_q, lin_k [B, 1, N, s]; v [B, 1, N, E]."""
        u, v = nn.functional.silu(self.uv(x)).chunk(2, -1)
        quad_q, quad_k, lin_q, lin_k = (t.unsqueeze(1) for t in self.qk(nn.functional.silu(self.z(x))))
        return u, quad_q, quad_k, lin_q, lin_k, v.unsqueeze(1)

    def forward(self, x):
        u, *qkv = self.project(x)
        y = torch.ops.attnx.mixed_chunk_attention(*qkv, **self.attrs)
        return self.out(u * y.squeeze(1))

    # Streaming carries the linear part's state over finished chunks, Σ k'_j v_jᵀ [B, 1, s, E],
    # and the current chunk's quadratic keys, linear keys and values [B, 1, L, ·] (L < g, empty
    # right after a chunk boundary): the decode step costs O(g), whatever the position.
    state_names = ("state", "quad_key", "lin_key", "value")
    state_axes = ({0: "batch"}, {0: "batch", 2: "in_chunk"}, {0: "batch", 2: "in_chunk"},
                  {0: "batch", 2: "in_chunk"})

    def prefill(self, x):
        """x [B, N, dim] → (y [B, N, dim], (state [B, 1, s, E], keys and values of the last N mod g))."""
        u, quad_q, quad_k, lin_q, lin_k, v = self.project(x)
        y = torch.ops.attnx.mixed_chunk_attention(quad_q, quad_k, lin_q, lin_k, v, **self.attrs)
        g = self.attrs["chunk_size"]
        done = x.shape[1] // g * g  # positions in finished chunks
        state = lin_k[:, :, :done].transpose(-1, -2) @ v[:, :, :done]
        return self.out(u * y.squeeze(1)), (state, quad_k[:, :, done:], lin_k[:, :, done:], v[:, :, done:])

    def decode(self, x, state):
        """One token x [B, 1, dim] after L positions of the current chunk → (y [B, 1, dim], next state)."""
        if not self.causal:
            raise ValueError("FLASH.decode: a non-causal attention has no token-by-token form")
        u, *qkv = self.project(x)
        y, state = mc.recurrent_step(*qkv, state, chunk_size=self.attrs["chunk_size"],
                                     quad_scale=self.attrs["quad_scale"], lin_scale=self.attrs["lin_scale"])
        return self.out(u * y.squeeze(1)), state
