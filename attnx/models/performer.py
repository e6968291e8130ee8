"""Performer (FAVOR+, Choromanski et al. 2021): positive random features, then linear attention.

Each forward is two `attnx::PerformerFeatures` calls (queries, keys) feeding one
`attnx::LinearAttention(feature_map="identity")`. The projection W [M, D] is drawn once at
construction (orthogonal blocks, rows rescaled to chi-distributed norms) and kept as a buffer,
so the exported graph holds it as an initializer. A causal Performer stabilises the keys
with a fixed constant (`kind` key_fixed) rather than the sequence maximum, which would make
each key's features depend on later keys (attnx/ops/performer_features/).
"""

from __future__ import annotations

import torch
from torch import nn

from attnx.ops import linear_attention, performer_features


def orthogonal_random_features(m: int, d: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """W [m, d]: stacked d×d orthogonal blocks (QR of Gaussians), each row rescaled to the norm of
    a d-dimensional Gaussian vector (chi with d degrees of freedom), so rows are marginally
    Gaussian while rows within a block are exactly orthogonal."""
    blocks = []
    for _ in range(-(-m // d)):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
        blocks.append(q.T)
    rows = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=generator).norm(dim=1, keepdim=True)
    return rows * norms


def key_kind(causal: bool) -> str:
    """The key stabiliser: the sequence maximum (the paper's) when non-causal; a fixed constant
    when causal, so a key's features do not depend on later keys and a prefix state is exact."""
    return "key_fixed" if causal else "key"


def reference(q, k, v, w, *, causal: bool, eps: float = 1e-4, attention_eps: float = 1e-6):
    """Float64 definition. q, k [B, H, N, D], v [B, H, N, E], w [M, D] → y [B, H, N, E]."""
    fq = performer_features.reference(q, w, kind="query", eps=eps, offset=0.0)[0]
    fk = performer_features.reference(k, w, kind=key_kind(causal), eps=eps, offset=0.0)[0]
    return linear_attention.reference(fq, fk, v, causal=causal, feature_map="identity", normalize=True,
                                      eps=attention_eps, chunk_size=1)[0]


class Performer(nn.Module):
    """x [B, N, dim] → [B, N, dim]; `features` random features per head."""

    def __init__(self, dim: int, heads: int, *, features: int = 32, causal: bool = True, eps: float = 1e-4,
                 chunk_size: int = 64):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.feature_attrs = performer_features.SPEC.resolve({"eps": eps})
        self.attention_attrs = linear_attention.SPEC.resolve(
            {"causal": causal, "feature_map": "identity", "chunk_size": chunk_size})
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("projection", orthogonal_random_features(features, self.head_dim))

    @property
    def causal(self) -> bool:
        return self.attention_attrs["causal"]

    def features(self, x):
        """x [B, N, dim] → φ(q), φ(k) [B, H, N, M] and v [B, H, N, D]."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        fq = torch.ops.attnx.performer_features(q, self.projection, **dict(self.feature_attrs, kind="query"))
        fk = torch.ops.attnx.performer_features(k, self.projection,
                                                **dict(self.feature_attrs, kind=key_kind(self.causal)))
        return fq, fk, v

    def forward(self, x):
        y = torch.ops.attnx.linear_attention(*self.features(x), **self.attention_attrs)[0]
        return self.out(y.transpose(1, 2).flatten(2))

    # Streaming carries linear attention's float32 state over the key features (S [B, H, M, D],
    # z [B, H, M]): with the causal (fixed) key stabiliser each key's features are final when it arrives.
    state_names = ("state_s", "state_z")
    state_axes = ({0: "batch"}, {0: "batch"})

    def prefill(self, x):
        """x [B, N, dim] → (y [B, N, dim], (S [B, H, M, D], z [B, H, M]))."""
        self._require_causal("prefill")
        y, s, z = torch.ops.attnx.linear_attention(*self.features(x), **self.attention_attrs)
        return self.out(y.transpose(1, 2).flatten(2)), (s, z)

    def decode(self, x, state):
        """One token x [B, 1, dim] after the tokens summed in state → (y [B, 1, dim], next state)."""
        self._require_causal("decode")
        # one query over the state and its own key: causal and non-causal agree, and the
        # non-causal form needs no chunk padding
        attrs = dict(self.attention_attrs, causal=False)
        y, s, z = torch.ops.attnx.linear_attention(*self.features(x), *state, **attrs)
        return self.out(y.transpose(1, 2).flatten(2)), (s, z)

    def _require_causal(self, what: str) -> None:
        if not self.causal:
            raise ValueError(f"Performer.{what}: a non-causal attention has no token-by-token form")
