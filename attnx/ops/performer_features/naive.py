"""PerformerFeatures in float64, as written down: the definition and the same formula row by row.

Every other implementation (the ONNX body, the eager path, the CUDA kernel) is tested against
`reference`.
"""

from __future__ import annotations

import math

import torch


def stabiliser(wx, *, kind, offset):
    """c, broadcastable to wx [B, H, N, M]: per row (query), per batch and head (key), or `offset`."""
    if kind == "query":
        return wx.amax(-1, keepdim=True)
    if kind == "key":
        return wx.amax((-2, -1), keepdim=True)
    return offset


def reference(x, w, *, kind, eps, offset):
    """Float64 definition. x [B, H, N, D], w [M, D] → (features [B, H, N, M],)."""
    x, w = x.double(), w.double()
    x = x * x.shape[-1] ** -0.25
    wx = x @ w.T
    c = stabiliser(wx, kind=kind, offset=offset)
    half_norm = (x * x).sum(-1, keepdim=True) / 2
    return ((wx - half_norm - c).exp() / w.shape[0] ** 0.5 + eps,)


def naive_rowwise_favor_features(x, w, *, kind, eps, offset):
    """Row by row in float64, the formula as VARIANTS.md writes it. Shapes as in `reference`."""
    x, w = x.double(), w.double()
    b, h, n, d = x.shape
    m = w.shape[0]
    xs = x * d ** -0.25
    out = torch.zeros(b, h, n, m, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            key_c = max(float(w[f] @ xs[bi, hi, j]) for j in range(n) for f in range(m))
            for i in range(n):
                wx = w @ xs[bi, hi, i]
                c = {"query": float(wx.max()), "key": key_c, "key_fixed": offset}[kind]
                out[bi, hi, i] = torch.exp(wx - xs[bi, hi, i].square().sum() / 2 - c) / math.sqrt(m) + eps
    return out
