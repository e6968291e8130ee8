"""SparseAttention: softmax attention over a structured key set (VARIANTS.md, "Sparse attention").

The mask is the definition. With d = i − j (query i, key j, both in [0, N)):

- local:   |d| ≤ w;               causal: 0 ≤ d < w (w keys, the query's own included)
- dilated: d mod r = 0, |d| ≤ w·r; causal: d mod r = 0, 0 ≤ d < w·r (dilation 1 is local)
- strided: local(w) ∪ {d mod t = 0}; causal: both parts with d ≥ 0
- block:   ⌊i/b⌋ = ⌊j/b⌋;          causal: and d ≥ 0 (TransNormer's DiagAttention)

Every pattern holds j = i, so no row is empty. `scale` 0 means 1/√D. Keys and values have
the queries' length. The function body touches only allowed keys: local and dilated gather
a window of keys per query ([B, H, N, L, D], L = 2w+1 or w); strided adds, per residue
mod t, the [N/t, N/t] products of queries and keys of that residue; block works on
[N/b, b, b] tiles. No tensor has two axes of length N.
"""

from __future__ import annotations

import numpy as np
import torch

from attnx.ops.function_builder import FunctionBuilder
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

PATTERNS = ("local", "dilated", "strided", "block")


def allowed(i: torch.Tensor, j: torch.Tensor, *, pattern, window, dilation, stride, block, causal) -> torch.Tensor:
    """The mask: True where query i may attend to key j (broadcasting integer tensors)."""
    d = i - j
    if pattern == "block":
        keep = torch.div(i, block, rounding_mode="floor") == torch.div(j, block, rounding_mode="floor")
        return keep & (d >= 0) if causal else keep
    r = dilation if pattern == "dilated" else 1
    near = (d >= 0) & (d < window * r) if causal else d.abs() <= window * r
    if pattern == "local":
        return near
    if pattern == "dilated":
        return near & (d % r == 0)
    far = d % stride == 0
    return near | (far & (d >= 0) if causal else far)


def reference(q, k, v, *, pattern, window, dilation, stride, block, causal, scale):
    """Float64 definition: dense softmax under the mask. q, k [B, H, N, D], v [B, H, N, E] → (y,)."""
    q, k, v = q.double(), k.double(), v.double()
    n = q.shape[2]
    s = scale or q.shape[-1] ** -0.5
    pos = torch.arange(n)
    mask = allowed(pos[:, None], pos[None, :], pattern=pattern, window=window, dilation=dilation,
                   stride=stride, block=block, causal=causal)
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) * s
    return (torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v,)


def window_offsets(attrs) -> list[int]:
    """The offsets d = i − j a local or dilated query (or a strided query's local part) may see."""
    r = attrs["dilation"] if attrs["pattern"] == "dilated" else 1
    w = attrs["window"]
    steps = range(w) if attrs["causal"] else range(-w, w + 1)
    return [t * r for t in steps]


def _f32(b: FunctionBuilder, value) -> str:
    return b.const(value, np.float32)


def function_body(attrs, n_inputs: int, n_outputs: int, opset: int):
    """The allowed-blocks-only ONNX body (module docstring), float32 inside."""
    b = FunctionBuilder(SPEC.domain, SPEC.name, SPEC.overload(attrs, n_inputs, n_outputs), opset)
    q, k, v = (b.Cast(x, to=1) for x in ("q", "k", "v"))
    if attrs["scale"]:
        q = b.Mul(q, _f32(b, attrs["scale"]))
    else:
        q = b.Div(q, b.Sqrt(b.Cast(b.Shape(q, start=3), to=1)))
    n = b.Shape(q, start=2, end=3)                                            # [1]
    y = _block(b, q, k, v, n, attrs) if attrs["pattern"] == "block" else _windowed(b, q, k, v, n, attrs)
    b.rename(b.CastLike(y, "q"), "y")
    return b.build(["q", "k", "v"], ["y"])


def _pad_seq(b, x, pad):
    """Zero-pad axis 2 of [B, H, N, D] by `pad` ([1] int64) at the end."""
    return b.Pad(x, b.Concat(b.const([0, 0, 0, 0, 0, 0]), pad, b.const([0]), axis=0))


def _block(b, q, k, v, n, attrs):
    size = attrs["block"]
    c = b.const([size])
    pad = b.Mod(b.Sub(c, b.Mod(n, c)), c)

    def tiles(x):  # [B, H, N, D] → [B, H, N/b, b, D]
        x = _pad_seq(b, x, pad)
        return b.Reshape(x, b.Concat(b.Shape(x, end=2), b.const([-1, size]), b.Shape(x, start=3), axis=0))

    qt, kt, vt = tiles(q), tiles(k), tiles(v)
    scores = b.MatMul(qt, b.Transpose(kt, perm=[0, 1, 2, 4, 3]))              # [B, H, N/b, b, b]
    n_pad = b.Add(n, pad)
    key_pos = b.Reshape(b.Range(b.const(0), b.Squeeze(n_pad), b.const(1)), b.const([-1, 1, size]))
    keep = b.Less(key_pos, n)                                                  # [N/b, 1, b]: real keys
    if attrs["causal"]:
        inside = b.Range(b.const(0), b.const(size), b.const(1))
        keep = b.And(keep, b.GreaterOrEqual(b.Unsqueeze(inside, b.const([1])), inside))  # [b, b]: j <= i
    probs = b.Softmax(b.Where(keep, scores, _f32(b, -np.inf)), axis=-1)
    y = b.MatMul(probs, vt)                                                    # [B, H, N/b, b, E]
    y = b.Reshape(y, b.Concat(b.Shape(y, end=2), b.const([-1]), b.Shape(y, start=4), axis=0))
    return b.Slice(y, b.const([0]), n, b.const([2]))


def _windowed(b, q, k, v, n, attrs):
    offsets = window_offsets(attrs)
    span = max(abs(o) for o in offsets)
    d = b.const(offsets)                                                       # [L]
    i = b.Unsqueeze(b.Range(b.const(0), b.Squeeze(n), b.const(1)), b.const([1]))  # [N, 1]
    j = b.Sub(i, d)                                                            # [N, L]
    keep = b.And(b.GreaterOrEqual(j, b.const(0)), b.Less(j, n))
    both = b.const([span])
    pads = b.Concat(b.const([0, 0]), both, b.const([0, 0, 0]), both, b.const([0]), axis=0)
    index = b.Add(j, b.const(span))
    kw = b.Gather(b.Pad(k, pads), index, axis=2)                              # [B, H, N, L, D]
    vw = b.Gather(b.Pad(v, pads), index, axis=2)                              # [B, H, N, L, E]
    local = b.Squeeze(b.MatMul(b.Unsqueeze(q, b.const([3])), b.Transpose(kw, perm=[0, 1, 2, 4, 3])),
                      b.const([3]))                                            # [B, H, N, L]
    local = b.Where(keep, local, _f32(b, -np.inf))
    if attrs["pattern"] != "strided":
        probs = b.Softmax(local, axis=-1)
        return b.Squeeze(b.MatMul(b.Unsqueeze(probs, b.const([3])), vw), b.const([3]))

    # strided: keys of the query's residue mod t, other than those the window already holds
    t = attrs["stride"]
    c = b.const([t])
    pad = b.Mod(b.Sub(c, b.Mod(n, c)), c)
    n_pad = b.Add(n, pad)

    def residues(x):  # [B, H, N, D] → [B, H, t, N/t, D]: row ρ holds positions ρ, ρ + t, …
        x = _pad_seq(b, x, pad)
        x = b.Reshape(x, b.Concat(b.Shape(x, end=2), b.const([-1, t]), b.Shape(x, start=3), axis=0))
        return b.Transpose(x, perm=[0, 1, 3, 2, 4])

    qr, kr, vr = residues(q), residues(k), residues(v)
    far = b.MatMul(qr, b.Transpose(kr, perm=[0, 1, 2, 4, 3]))               # [B, H, t, A, A]
    rho = b.Range(b.const(0), b.const(t), b.const(1))
    a = b.Range(b.const(0), b.Div(b.Squeeze(n_pad), b.const(t)), b.const(1))
    pos = b.Add(b.Unsqueeze(b.Mul(a, b.const(t)), b.const([0])), b.Unsqueeze(rho, b.const([1])))  # [t, A]
    qi, kj = b.Unsqueeze(pos, b.const([2])), b.Unsqueeze(pos, b.const([1]))  # [t, A, 1], [t, 1, A]
    dd = b.Sub(qi, kj)
    w = attrs["window"]
    in_window = (b.And(b.GreaterOrEqual(dd, b.const(0)), b.Less(dd, b.const(w))) if attrs["causal"]
                 else b.LessOrEqual(b.Abs(dd), b.const(w)))
    keep_far = b.And(b.Less(kj, n), b.Not(in_window))
    if attrs["causal"]:
        keep_far = b.And(keep_far, b.GreaterOrEqual(dd, b.const(0)))
    far = b.Where(keep_far, far, _f32(b, -np.inf))

    def query_order(x):  # [B, H, t, A, ·] → [B, H, N, ·]
        x = b.Transpose(x, perm=[0, 1, 3, 2, 4])
        x = b.Reshape(x, b.Concat(b.Shape(x, end=2), b.const([-1]), b.Shape(x, start=4), axis=0))
        return b.Slice(x, b.const([0]), n, b.const([2]))

    probs = b.Softmax(b.Concat(local, query_order(far), axis=-1), axis=-1)   # [B, H, N, L + A]
    size = b.const([len(offsets)])
    p_local = b.Slice(probs, b.const([0]), size, b.const([-1]))
    p_far = _pad_seq(b, b.Slice(probs, size, b.const([np.iinfo(np.int64).max]), b.const([-1])), pad)
    p_far = b.Transpose(b.Reshape(p_far, b.Concat(b.Shape(p_far, end=2), b.const([-1, t]),
                                                  b.Shape(p_far, start=3), axis=0)), perm=[0, 1, 3, 2, 4])
    y_local = b.Squeeze(b.MatMul(b.Unsqueeze(p_local, b.const([3])), vw), b.const([3]))
    return b.Add(y_local, query_order(b.MatMul(p_far, vr)))


SPEC = OpSpec(
    name="SparseAttention",
    doc=__doc__,
    inputs=(
        TensorArg("q", "[B, H, N, D]", "queries"),
        TensorArg("k", "[B, H, N, D]", "keys, as many as queries"),
        TensorArg("v", "[B, H, N, E]", "values"),
    ),
    outputs=(TensorArg("y", "[B, H, N, E]", "attention output, dtype of q"),),
    attributes=(
        Attr("pattern", str, "local", "which keys a query sees (module docstring)", choices=PATTERNS),
        Attr("window", int, 16, "local half-width w (causal: w keys back, the query's own included); "
             "local, dilated and strided", low=1, high=4096),
        Attr("dilation", int, 2, "dilated: every r-th key within w·r", low=1, high=4096),
        Attr("stride", int, 16, "strided: also every t-th key", low=1, high=4096),
        Attr("block", int, 64, "block: tile length b", low=1, high=4096),
        Attr("causal", bool, False, "keys j <= i only"),
        Attr("scale", float, 0.0, "multiplies q·k; 0 means 1/sqrt(D)", low=0.0),
    ),
    reference=reference,
    function_body=function_body,
    plugin=PluginSpec("SparseAttention"),
)
