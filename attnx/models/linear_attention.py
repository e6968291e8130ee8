"""Multi-head linear attention: one `attnx::LinearAttention` call per forward.

The float64 definition is `attnx.ops.linear_attention.reference`; `step` is the same
attention as an RNN (VARIANTS.md, "Attention as an RNN", the op's `recurrent_step`): one token in,
float32 state (S [B, H, D, E], z [B, H, D]) in and out, reproducing the causal forward token by token.
Without `normalize` the heads are RMS-normalised instead (TransNormer's NormAttention).
"""

from __future__ import annotations

import torch
from torch import nn

from attnx.ops import linear_attention as la


class LinearAttention(nn.Module):
    """x [B, N, dim] → [B, N, dim]; attributes as in the LinearAttention op spec."""

    def __init__(self, dim: int, heads: int, **attrs):
        super().__init__()
        self.attrs = la.SPEC.resolve(attrs)
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = None if self.attrs["normalize"] else nn.RMSNorm(self.head_dim)

    def _heads(self, x):
        """x [B, N, dim] → q, k, v [B, H, N, D]."""
        return self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)

    def forward(self, x):
        y = torch.ops.attnx.linear_attention(*self._heads(x), **self.attrs)[0]
        return self._merge(y.transpose(1, 2))

    @property
    def causal(self) -> bool:
        return self.attrs["causal"]

    # Streaming (prefill, then decode one token at a time) carries the float32 state (S, z).
    state_names = ("state_s", "state_z")
    state_axes = ({0: "batch"}, {0: "batch"})

    def prefill(self, x):
        """x [B, N, dim] → (y [B, N, dim], (S [B, H, D, D], z [B, H, D]))."""
        self._require_causal("prefill")
        y, s, z = torch.ops.attnx.linear_attention(*self._heads(x), **self.attrs)
        return self._merge(y.transpose(1, 2)), (s, z)

    def decode(self, x, state):
        """One token x [B, 1, dim] after the tokens summed in state → (y [B, 1, dim], next state)."""
        self._require_causal("decode")
        # one query over the state and its own key: causal and non-causal agree, and the
        # non-causal form needs no chunk padding
        attrs = dict(self.attrs, causal=False)
        y, s, z = torch.ops.attnx.linear_attention(*self._heads(x), *state, **attrs)
        return self._merge(y.transpose(1, 2)), (s, z)

    def _require_causal(self, what: str) -> None:
        if not self.attrs["causal"]:
            raise ValueError(f"LinearAttention.{what}: a non-causal attention has no token-by-token form")

    def _merge(self, y):
        """y [B, N, H, E] → [B, N, dim]."""
        if self.norm is not None:
            y = self.norm(y)
        return self.out(y.flatten(2))

    def initial_state(self, batch: int, device=None):
        d = self.head_dim
        return (torch.zeros(batch, self.heads, d, d, device=device),
                torch.zeros(batch, self.heads, d, device=device))

    def step(self, x, state=None):
        """One token x [B, dim] with state (S, z) → (y [B, dim], new state). Causal only."""
        self._require_causal("step")
        s, z = state if state is not None else self.initial_state(x.shape[0], x.device)
        q, k, v = self._heads(x.unsqueeze(1)).squeeze(3)   # [B, H, D] each
        y, s, z = la.recurrent_step(q, k, v, s, z, feature_map=self.attrs["feature_map"],
                                    normalize=self.attrs["normalize"], eps=self.attrs["eps"])
        return self._merge(y.to(x.dtype).unsqueeze(1)).squeeze(1), (s, z)
