"""SparseAttention in float64, as written down: the mask (the definition), dense softmax under it,
the same row by row with each allowed set spelled out, and the decode step over a key cache.

Every other implementation (the ONNX body, the eager path, the CUDA kernel) is tested against
`reference`.
"""

from __future__ import annotations

import torch


def allowed(i: torch.Tensor, j: torch.Tensor, *, pattern, window, dilation, stride, block, causal, look_back=0,
            look_ahead=0) -> torch.Tensor:
    """The mask: True where query i may attend to key j (broadcasting integer tensors)."""
    d = i - j
    if pattern == "block":
        ti, tj = torch.div(i, block, rounding_mode="floor"), torch.div(j, block, rounding_mode="floor")
        keep = (tj >= ti - look_back) & (tj <= ti + look_ahead)
        return keep & (d >= 0) if causal else keep
    r = dilation if pattern == "dilated" else 1
    near = (d >= 0) & (d < window * r) if causal else d.abs() <= window * r
    if pattern == "local":
        return near
    if pattern == "dilated":
        return near & (d % r == 0)
    far = d % stride == 0
    return near | (far & (d >= 0) if causal else far)


def reference(q, k, v, *, pattern, window, dilation, stride, block, causal, scale, look_back=0, look_ahead=0):
    """Float64 definition: dense softmax under the mask. q, k [B, H, N, D], v [B, H, N, E] → (y,)."""
    q, k, v = q.double(), k.double(), v.double()
    n = q.shape[2]
    s = scale or q.shape[-1] ** -0.5
    pos = torch.arange(n)
    mask = allowed(pos[:, None], pos[None, :], pattern=pattern, window=window, dilation=dilation,
                   stride=stride, block=block, causal=causal, look_back=look_back, look_ahead=look_ahead)
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) * s
    return (torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v,)


def window_offsets(attrs) -> list[int]:
    """The offsets d = i − j a local or dilated query (or a strided query's local part) may see."""
    r = attrs["dilation"] if attrs["pattern"] == "dilated" else 1
    w = attrs["window"]
    steps = range(w) if attrs["causal"] else range(-w, w + 1)
    return [t * r for t in steps]


def allowed_keys(i: int, n: int, *, pattern, window, dilation, stride, block, causal, look_back=0,
                 look_ahead=0) -> set[int]:
    """The allowed set A(i) of query i among n keys, spelled out from VARIANTS.md one key at a time."""
    keys = set()
    for j in range(n):
        d = i - j
        if causal and d < 0:
            continue
        if pattern == "local":
            ok = d < window if causal else abs(d) <= window
        elif pattern == "dilated":
            ok = d % dilation == 0 and (d < window * dilation if causal else abs(d) <= window * dilation)
        elif pattern == "strided":
            ok = (d < window if causal else abs(d) <= window) or d % stride == 0
        else:
            ok = i // block - look_back <= j // block <= i // block + look_ahead
        if ok:
            keys.add(j)
    return keys


def naive_rowwise_sparse_attn(q, k, v, *, scale, **pattern):
    """Row by row in float64: softmax over `allowed_keys` of each query. Shapes as in `reference`."""
    q, k, v = q.double(), k.double(), v.double()
    n = q.shape[2]
    s = scale or q.shape[-1] ** -0.5
    y = torch.zeros(*q.shape[:3], v.shape[-1], dtype=torch.float64)
    for i in range(n):
        keys = sorted(allowed_keys(i, n, **pattern))
        w = torch.softmax(torch.einsum("bhd,bhjd->bhj", q[:, :, i], k[:, :, keys]) * s, -1)
        y[:, :, i] = torch.einsum("bhj,bhje->bhe", w, v[:, :, keys])
    return y


def recurrent_step(q, k, v, *, pattern, window, dilation, stride, block, causal, scale, look_back=0, look_ahead=0):
    """One causal token: q [B, H, 1, D], the newest position, over the cached keys k [B, H, T, D] and
    values v [B, H, T, E], its own last → y [B, H, 1, E], in the inputs' dtype. A `local` cache holds
    just the window, every key of it allowed; any other pattern's holds every position 0..T−1."""
    scores = q @ k.transpose(-1, -2) * (scale or q.shape[-1] ** -0.5)           # [B, H, 1, T]
    if pattern != "local":
        j = torch.arange(k.shape[2], device=k.device)
        keep = allowed(j[-1:], j, pattern=pattern, window=window, dilation=dilation, stride=stride, block=block,
                       causal=causal, look_back=look_back, look_ahead=look_ahead)
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, -1) @ v
