"""Multi-head softmax attention with length-aware scales.

Scale modes (VARIANTS.md, "Softmax attention"): `default` s = 1/√d; `log_n`
s = log n / log n_train · 1/√d, where n is the number of keys a query sees (the sequence
length, or the visible count i+1 when causal), so attention stays sharp past the training
length; `fixed` s = a given constant. The length factor is applied to q in the graph, so the
attention itself exports as standard ops (ONNX `Attention` at opset 23).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnx.errors import AttributeValueError

SCALE_MODES = ("default", "log_n", "fixed")


def naive_softmax_attention(q, k, v, *, scale, causal):
    """Float64 definition. q [B, H, N, D], k/v [B, H, M, ·]; scale a number or [N, 1] per row."""
    q, k, v = q.double(), k.double(), v.double()
    scale = torch.as_tensor(scale, dtype=torch.float64)
    s = torch.einsum("bhnd,bhmd->bhnm", q, k) * scale
    if causal:
        n, m = s.shape[-2:]
        s = s.masked_fill(torch.ones(n, m, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v


def length_scale(n: int, *, causal: bool, n_train: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """log n / log n_train as a [N, 1] column: per position (visible count) when causal."""
    positions = torch.arange(1, n + 1, dtype=dtype, device=device)
    visible = positions if causal else positions[-1:].expand(n)
    return (torch.log(visible) / math.log(n_train)).unsqueeze(-1)


class SoftmaxAttention(nn.Module):
    """x [B, N, dim] → [B, N, dim]; heads of size dim / heads."""

    min_opset = 23  # exports as ONNX Attention (and its key/value cache) from opset 23

    def __init__(self, dim: int, heads: int, *, causal: bool = True, scale_mode: str = "default",
                 n_train: int = 512, fixed_scale: float | None = None):
        super().__init__()
        if scale_mode not in SCALE_MODES:
            raise AttributeValueError(f"SoftmaxAttention: scale_mode = {scale_mode!r} is not allowed; "
                                      f"expected one of {', '.join(map(repr, SCALE_MODES))}")
        if scale_mode == "fixed" and not (fixed_scale and fixed_scale > 0):
            raise AttributeValueError(f"SoftmaxAttention: scale_mode 'fixed' needs fixed_scale > 0, got {fixed_scale!r}")
        if scale_mode == "log_n" and n_train < 2:
            raise AttributeValueError(f"SoftmaxAttention: n_train must be >= 2 for log_n, got {n_train}")
        self.heads, self.head_dim = heads, dim // heads
        self.causal, self.scale_mode, self.n_train = causal, scale_mode, n_train
        self.scale = fixed_scale if scale_mode == "fixed" else 1 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def project(self, x):
        """x [B, N, dim] → q, k, v [B, H, N, D], the length factor already on q."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        if self.scale_mode == "log_n":
            q = q * length_scale(x.shape[1], causal=self.causal, n_train=self.n_train, dtype=q.dtype, device=q.device)
        return q, k, v

    def forward(self, x):
        return self.prefill(x)[0]

    # Streaming carries a key/value cache that grows by one position per decoded token.
    state_names = ("key", "value")
    state_axes = ({0: "batch", 2: "past"}, {0: "batch", 2: "past"})

    def prefill(self, x):
        """x [B, N, dim] → (y [B, N, dim], (keys, values) [B, H, N, D])."""
        q, k, v = self.project(x)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        return self.out(y.transpose(1, 2).flatten(2)), (k, v)

    def decode(self, x, state):
        """One token x [B, 1, dim] after T cached positions [B, H, T, D] → (y [B, 1, dim], cache of T + 1)."""
        if not self.causal:
            raise ValueError("SoftmaxAttention.decode: a non-causal attention has no token-by-token form")
        past_k, past_v = state
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        if self.scale_mode == "log_n":  # the new token sees T + 1 keys: the last row of the causal column
            q = q * length_scale(k.shape[2], causal=True, n_train=self.n_train, dtype=q.dtype, device=q.device)[-1:]
        y = nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.out(y.transpose(1, 2).flatten(2)), (k, v)
