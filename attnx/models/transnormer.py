"""TransNormer (Qin et al. 2022): DiagAttention in the lower layers, NormAttention in the upper ones.

DiagAttention is block-diagonal softmax attention (`attnx::SparseAttention`, pattern block).
NormAttention is linear attention without the denominator (`attnx::LinearAttention`,
normalize=False), its heads RMS-normalised and gated by silu(x W_g) before the output
projection: the norm replaces the division that makes plain linear attention unstable.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from attnx.models.sparse_attention import SparseAttention
from attnx.models.tiny_lm import TinyLM
from attnx.ops import linear_attention as la


def reference(q, k, v, gate, norm_weight, *, causal: bool, eps: float = 1e-6):
    """Float64 NormAttention core. q, k, v [B, H, N, D], gate [B, H, N, D] (after silu), norm
    weight [D] → RMSNorm(φ(q)·Σφ(k)vᵀ) ⊙ gate, [B, H, N, D]."""
    y = la.reference(q, k, v, causal=causal, feature_map="elu", normalize=False, eps=1e-6, chunk_size=1)[0]
    y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + eps) * norm_weight.double()
    return y * gate.double()


class NormAttention(nn.Module):
    """x [B, N, dim] → [B, N, dim]."""

    def __init__(self, dim: int, heads: int, *, causal: bool = True, chunk_size: int = 64):
        super().__init__()
        self.attrs = la.SPEC.resolve({"causal": causal, "feature_map": "elu", "normalize": False,
                                      "chunk_size": chunk_size})
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.gate = nn.Linear(dim, dim)
        self.norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.out = nn.Linear(dim, dim)

    @property
    def causal(self) -> bool:
        return self.attrs["causal"]

    def forward(self, x):
        return self.prefill(x)[0]

    # Streaming carries linear attention's float32 state (S [B, H, D, D], z [B, H, D]); z is
    # unused without the denominator but is the op's state output, so it travels too.
    state_names = ("state_s", "state_z")
    state_axes = ({0: "batch"}, {0: "batch"})

    def _heads(self, x):
        return self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)

    def _merge(self, x, y):
        """RMS-normalised heads y [B, H, N, D] gated by silu(x W_g) → [B, N, dim]."""
        gate = nn.functional.silu(self.gate(x)).unflatten(-1, (self.heads, self.head_dim))
        return self.out((self.norm(y.transpose(1, 2)) * gate).flatten(2))

    def prefill(self, x):
        """x [B, N, dim] → (y [B, N, dim], (S [B, H, D, D], z [B, H, D]))."""
        y, s, z = torch.ops.attnx.linear_attention(*self._heads(x), **self.attrs)
        return self._merge(x, y), (s, z)

    def decode(self, x, state):
        """One token x [B, 1, dim] after the tokens summed in state → (y [B, 1, dim], next state)."""
        if not self.causal:
            raise ValueError("NormAttention.decode: a non-causal attention has no token-by-token form")
        # one query over the state and its own key: causal and non-causal agree, and the
        # non-causal form needs no chunk padding
        y, s, z = torch.ops.attnx.linear_attention(*self._heads(x), *state, **dict(self.attrs, causal=False))
        return self._merge(x, y), (s, z)


def diag_attention(dim: int, heads: int, *, block: int = 32, causal: bool = True) -> SparseAttention:
    """DiagAttention: softmax inside blocks of `block` positions."""
    return SparseAttention(dim, heads, pattern="block", block=block, causal=causal)


def transnormer_lm(*, layers: int = 2, heads: int = 4, block: int = 32, causal: bool = True, **lm) -> TinyLM:
    """A TinyLM whose lower half of layers use DiagAttention and upper half NormAttention."""
    lower = layers // 2
    factories: list[Callable[[int], nn.Module]] = (
        [lambda d: diag_attention(d, heads, block=block, causal=causal)] * lower
        + [lambda d: NormAttention(d, heads, causal=causal)] * (layers - lower))
    made = iter(factories)
    return TinyLM(lambda d: next(made)(d), layers=layers, **lm)
