"""Multi-head sparse attention (local, dilated, strided, block): one `attnx::SparseAttention` per call.

The float64 definition is `attnx.ops.sparse_attention.reference`: dense softmax under the
pattern's mask.
"""

from __future__ import annotations

import torch
from torch import nn

from attnx.ops import sparse_attention as spec
from attnx.ops import torch_ops  # noqa: F401  (registers torch.ops.attnx.*)


class SparseAttention(nn.Module):
    """x [B, N, dim] → [B, N, dim]; attributes as in the SparseAttention op spec."""

    def __init__(self, dim: int, heads: int, **attrs):
        super().__init__()
        self.attrs = spec.SPEC.resolve(attrs)
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    @property
    def causal(self) -> bool:
        return self.attrs["causal"]

    def forward(self, x):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        y = torch.ops.attnx.sparse_attention(q, k, v, **self.attrs)
        return self.out(y.transpose(1, 2).flatten(2))
