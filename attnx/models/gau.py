"""GAU, the gated attention unit (Hua et al. 2022, "Transformer Quality in Linear Time").

From x [B, N, dim]: U = silu(x W_u), V = silu(x W_v) [B, N, E], Z = silu(x W_z) [B, N, s],
Q = Z ⊙ γ_q + β_q, K = Z ⊙ γ_k + β_k; output (U ⊙ A V) W_o, single head, with

- `relu2`: A = relu²(QKᵀ/√s) divided by a length norm L (`norm`: n = sequence length,
  visible = row i's visible count i+1 when causal (n otherwise), fixed = `fixed_length`,
  none = 1), outside the square (`norm_placement` outside, the paper's text) or inside
  (relu(QKᵀ/(√s·L))², as some public code does);
- `softmax`: A = softmax(log n / log n_train · QKᵀ/√s), the log-n scale that Su's article
  shows generalises to longer sequences where relu²/n does not.

The relu² attention is one `attnx::ReluSquaredAttention` call (attnx/ops/relu_squared_attention/),
in the prefill and in the decode step, so the exported graphs carry one node per call that the
TensorRT plugin takes. `relu_squared_attention` below is the same formula in plain torch ops,
kept as the readable form (the tests compare the two).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnx.errors import AttributeValueError
from attnx.models.flash import ScaleOffset
from attnx.models.softmax_attention import length_scale
from attnx.ops.relu_squared_attention import NORMS, PLACEMENTS

ATTENTIONS = ("relu2", "softmax")


def length_norm(n: int, *, causal: bool, norm: str, fixed_length: int, dtype, device=None) -> torch.Tensor:
    """L as a [N, 1] column (per row when `visible` and causal)."""
    # built from positions, not float(n): a Python number would fix the exported length
    positions = torch.arange(1, n + 1, dtype=dtype, device=device)
    if norm == "visible" and causal:
        lengths = positions
    elif norm in ("n", "visible"):
        lengths = positions[-1:].expand(n)
    else:
        lengths = torch.full_like(positions, float(fixed_length) if norm == "fixed" else 1.0)
    return lengths.unsqueeze(-1)


def relu_squared_attention(q, k, v, *, causal: bool, scale: float, norm: str, fixed_length: int,
                           norm_placement: str):
    """q, k [B, H, N, S], v [B, H, N, E] → [B, H, N, E]; A = relu²(scale·qkᵀ)/L or relu²(scale·qkᵀ/L)."""
    n = q.shape[2]
    lengths = length_norm(n, causal=causal, norm=norm, fixed_length=fixed_length, dtype=q.dtype, device=q.device)
    scores = scale * q @ k.transpose(-1, -2)
    a = torch.relu(scores / lengths).square() if norm_placement == "inside" else torch.relu(scores).square() / lengths
    if causal:
        a = a.tril()
    return a @ v


def reference(q, k, v, *, attention: str, causal: bool, norm: str = "n", fixed_length: int = 512,
              norm_placement: str = "outside", n_train: int = 512):
    """Float64 definition of GAU's attention, row by row. q, k [B, N, S], v [B, N, E] → [B, N, E]."""
    q, k, v = q.double(), k.double(), v.double()
    n, s = q.shape[1], q.shape[-1]
    y = torch.zeros(*q.shape[:2], v.shape[-1], dtype=torch.float64)
    for i in range(n):
        keys = i + 1 if causal else n
        scores = q[:, i:i + 1] @ k[:, :keys].transpose(-1, -2) / math.sqrt(s)    # [B, 1, keys]
        if attention == "softmax":
            seen = keys if causal else n
            a = torch.softmax(scores * math.log(seen) / math.log(n_train), -1)
        else:
            length = {"n": n, "visible": keys, "fixed": fixed_length, "none": 1}[norm]
            a = (torch.relu(scores / length).square() if norm_placement == "inside"
                 else torch.relu(scores).square() / length)
        y[:, i] = (a @ v[:, :keys]).squeeze(1)
    return y


class GAU(nn.Module):
    """x [B, N, dim] → [B, N, dim]; E = expansion·dim, s = qk_dim."""

    def __init__(self, dim: int, *, qk_dim: int = 32, expansion: int = 2, attention: str = "relu2",
                 causal: bool = True, norm: str = "n", fixed_length: int = 512, norm_placement: str = "outside",
                 n_train: int = 512):
        super().__init__()
        for name, value, allowed in (("attention", attention, ATTENTIONS), ("norm", norm, NORMS),
                                     ("norm_placement", norm_placement, PLACEMENTS)):
            if value not in allowed:
                raise AttributeValueError(f"GAU: {name} = {value!r} is not allowed; expected one of "
                                          + ", ".join(map(repr, allowed)))
        if fixed_length < 1 or n_train < 2:
            raise AttributeValueError(f"GAU: fixed_length must be >= 1 and n_train >= 2, got {fixed_length}, "
                                      f"{n_train}")
        self.attention, self.causal, self.n_train = attention, causal, n_train
        self.relu2 = dict(causal=causal, scale=qk_dim ** -0.5, norm=norm, fixed_length=fixed_length,
                          norm_placement=norm_placement)
        self.hidden = expansion * dim
        self.uv = nn.Linear(dim, 2 * self.hidden)
        self.z = nn.Linear(dim, qk_dim)
        self.qk = ScaleOffset(qk_dim, 2)
        self.out = nn.Linear(self.hidden, dim)

    def project(self, x):
        """x [B, N, dim] → u, v [B, N, E] and q, k [B, 1, N, s]."""
        u, v = nn.functional.silu(self.uv(x)).chunk(2, -1)
        q, k = (t.unsqueeze(1) for t in self.qk(nn.functional.silu(self.z(x))))
        return u, v, q, k

    def forward(self, x):
        return self.prefill(x)[0]

    # Streaming carries the keys [B, 1, T, s] and values [B, 1, T, E] seen so far: a cache
    # growing by one position per token, for relu² as for softmax.
    state_names = ("key", "value")
    state_axes = ({0: "batch", 2: "past"}, {0: "batch", 2: "past"})

    @property
    def why_not_streamable(self) -> str | None:
        """Why this GAU has no token-by-token form, or None when it has one."""
        if not self.causal:
            return "a non-causal attention has no token-by-token form"
        if self.attention == "relu2" and self.relu2["norm"] == "n":
            return ("relu²/n divides every row by the total length n, so the rows depend on the total length "
                    "(later tokens change earlier outputs); use norm 'visible', 'fixed' or 'none'")
        return None

    def prefill(self, x):
        """x [B, N, dim] → (y [B, N, dim], (keys [B, 1, N, s], values [B, 1, N, E]))."""
        u, v, q, k = self.project(x)
        v = v.unsqueeze(1)
        if self.attention == "softmax":
            q = q * length_scale(x.shape[1], causal=self.causal, n_train=self.n_train, dtype=q.dtype, device=q.device)
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=q.shape[-1] ** -0.5)
        else:
            y = torch.ops.attnx.relu_squared_attention(q, k, v, **self.relu2)
        return self.out(u * y.squeeze(1)), (k, v)

    def decode(self, x, state):
        """One token x [B, 1, dim] after T cached positions → (y [B, 1, dim], cache of T + 1)."""
        if self.why_not_streamable:
            raise ValueError(f"GAU.decode: {self.why_not_streamable}")
        u, v, q, k = self.project(x)
        k, v = torch.cat([state[0], k], dim=2), torch.cat([state[1], v.unsqueeze(1)], dim=2)
        t = k.shape[2]  # the new token sees T + 1 keys: the last row of the causal columns
        if self.attention == "softmax":
            q = q * length_scale(t, causal=True, n_train=self.n_train, dtype=q.dtype, device=q.device)[-1:]
            y = nn.functional.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5)
        else:
            # one query over every cached key is the non-causal op: `visible` is then the key
            # count T + 1, the new token's visible count ('n' does not stream, see above)
            y = torch.ops.attnx.relu_squared_attention(q, k, v, **dict(self.relu2, causal=False))
        return self.out(u * y.squeeze(1)), (k, v)
