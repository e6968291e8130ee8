"""ReluSquaredAttention in float64, as written down: the dense definition and the same sums row by row.

Every other implementation (the ONNX body, the eager path, the CUDA kernel) is tested against
`reference`; `naive_rowwise_relu_squared_attn` spells each row's keys and length out.
"""

from __future__ import annotations

import torch


def row_lengths(n: int, m: int, *, causal: bool, norm: str, fixed_length: int, dtype=torch.float64) -> torch.Tensor:
    """L as an [N, 1] column for N queries over M keys."""
    if norm == "visible" and causal:
        return torch.arange(1, n + 1, dtype=dtype).unsqueeze(-1)
    value = {"n": m, "visible": m, "fixed": fixed_length, "none": 1}[norm]
    return torch.full((n, 1), float(value), dtype=dtype)


def reference(q, k, v, bias=None, *, causal, scale, norm, fixed_length, norm_placement):
    """Float64 definition. q [B, H, N, D], k [B, H, M, D], v [B, H, M, E], bias broadcastable to
    [B, H, N, M] or None → (y [B, H, N, E],)."""
    q, k, v = q.double(), k.double(), v.double()
    s = scale or q.shape[-1] ** -0.5
    scores = s * torch.einsum("bhnd,bhmd->bhnm", q, k)
    if bias is not None:
        scores = scores + bias.double()
    lengths = row_lengths(q.shape[2], k.shape[2], causal=causal, norm=norm, fixed_length=fixed_length)
    a = torch.relu(scores / lengths).square() if norm_placement == "inside" else torch.relu(scores).square() / lengths
    if causal:
        a = a.tril()
    return (a @ v,)


def naive_rowwise_relu_squared_attn(q, k, v, bias=None, *, causal, scale, norm, fixed_length, norm_placement):
    """Row by row in float64, each row's length written out: one query over the keys it sees, as a
    decode step computes it. Shapes as in `reference`."""
    if bias is not None:
        bias = bias.double().expand(*q.shape[:3], k.shape[2])
    q, k, v = q.double(), k.double(), v.double()
    s = scale or q.shape[-1] ** -0.5
    y = torch.zeros(*q.shape[:3], v.shape[-1], dtype=torch.float64)
    for i in range(q.shape[2]):
        keys = i + 1 if causal else k.shape[2]
        length = {"n": k.shape[2], "visible": keys, "fixed": fixed_length, "none": 1}[norm]
        scores = s * torch.einsum("bhd,bhmd->bhm", q[:, :, i], k[:, :, :keys])
        if bias is not None:
            scores = scores + bias[:, :, i, :keys]
        a = torch.relu(scores / length).square() if norm_placement == "inside" else torch.relu(scores).square() / length
        y[:, :, i] = torch.einsum("bhm,bhme->bhe", a, v[:, :, :keys])
    return y
