"""Multi-head sparse attention (local, dilated, strided, block): one `attnx::SparseAttention` per call.

The float64 definition is `attnx.ops.sparse_attention.reference`: dense softmax under the
pattern's mask.
"""

from __future__ import annotations

import torch
from torch import nn

from attnx.ops import sparse_attention as sa


class SparseAttention(nn.Module):
    """x [B, N, dim] → [B, N, dim]; attributes as in the SparseAttention op spec."""

    def __init__(self, dim: int, heads: int, **attrs):
        super().__init__()
        self.attrs = sa.SPEC.resolve(attrs)
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    @property
    def causal(self) -> bool:
        return self.attrs["causal"]

    def project(self, x):
        """x [B, N, dim] → q, k, v [B, H, N, D]."""
        return self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)

    def forward(self, x):
        y = torch.ops.attnx.sparse_attention(*self.project(x), **self.attrs)
        return self.out(y.transpose(1, 2).flatten(2))

    # Streaming carries a key/value cache [B, H, T, D]. `local` keeps only the window's w − 1
    # most recent positions (the new token is the w-th key), so its cache stops growing; the
    # other patterns keep every position and mask the new row with the pattern (a ring
    # buffer of a dilated window, or of the current block, is not done).
    state_names = ("key", "value")
    state_axes = ({0: "batch", 2: "past"}, {0: "batch", 2: "past"})

    def _kept(self, k, v):
        """The cache to carry: the last w − 1 positions for local, all of them otherwise."""
        if self.attrs["pattern"] != "local":
            return k, v
        keep = self.attrs["window"] - 1
        if keep == 0:  # a window of one key is the query's own: nothing to carry
            return k[:, :, :0], v[:, :, :0]
        return k[:, :, -keep:], v[:, :, -keep:]

    def prefill(self, x):
        """x [B, N, dim] → (y [B, N, dim], (keys, values) [B, H, T, D]); T = N, or min(N, w − 1) for local."""
        q, k, v = self.project(x)
        y = torch.ops.attnx.sparse_attention(q, k, v, **self.attrs)
        return self.out(y.transpose(1, 2).flatten(2)), self._kept(k, v)

    def decode(self, x, state):
        """One token x [B, 1, dim] after the cached positions → (y [B, 1, dim], next cache)."""
        if not self.causal:
            raise ValueError("SparseAttention.decode: a non-causal attention has no token-by-token form")
        q, k, v = self.project(x)
        k, v = torch.cat([state[0], k], dim=2), torch.cat([state[1], v], dim=2)
        y = sa.recurrent_step(q, k, v, **self.attrs)
        return self.out(y.transpose(1, 2).flatten(2)), self._kept(k, v)
