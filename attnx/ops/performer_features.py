"""PerformerFeatures: FAVOR+ positive random features (Choromanski et al. 2021, VARIANTS.md).

φ(x) = exp(W x' − ‖x'‖²/2 − c) / √M + eps with x' = x · D^(-1/4), W [M, D] an input (the
projection, an initializer in exported models). The stabiliser c is a maximum of W x':
over the row's M features for queries (`kind` query), and one constant per batch and head
over all keys and features for keys (`kind` key): a constant shared by every key cancels in
linear attention's normaliser, a per-key one would reweight the keys. The features feed
`LinearAttention(feature_map="identity")`.

Because the key stabiliser spans the whole key set, a causal model's features of key j
depend on later keys through c (up to eps, the attention output does not), so no prefix
state reproduces the full run. `kind` key_fixed is the causal-safe choice: c = `offset`, a
data-independent constant, still one value shared by every key (so it cancels the same
way), and each key's features depend on that key alone. Without a data-dependent maximum
nothing guards exp against overflow; W x' − ‖x'‖²/2 ≤ ‖w‖²/2 bounds the exponent, and
`offset` lowers it where that bound is too large for the dtype. The paper's
sequence maximum (key) stays the choice for non-causal attention.
"""

from __future__ import annotations

import numpy as np

from attnx.ops.function_builder import FunctionBuilder
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

KINDS = ("query", "key", "key_fixed")


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


def function_body(attrs, n_inputs: int, n_outputs: int, opset: int):
    """Elementwise after one [N, D] × [D, M] MatMul; float32 inside."""
    b = FunctionBuilder(SPEC.domain, SPEC.name, SPEC.overload(attrs, n_inputs, n_outputs), opset)
    x, w = b.Cast("x", to=1), b.Cast("w", to=1)
    d, m = b.Cast(b.Shape(x, start=3), to=1), b.Cast(b.Shape(w, end=1), to=1)
    x = b.Mul(x, b.Pow(d, b.const(-0.25, np.float32)))
    wx = b.MatMul(x, b.Transpose(w, perm=[1, 0]))                                     # [B, H, N, M]
    if attrs["kind"] == "key_fixed":
        c = b.const(attrs["offset"], np.float32)
    else:
        c = b.ReduceMax(wx, b.const([-1] if attrs["kind"] == "query" else [-2, -1]), keepdims=1)
    half_norm = b.Div(b.ReduceSum(b.Mul(x, x), b.const([-1]), keepdims=1), b.const(2.0, np.float32))
    phi = b.Div(b.Exp(b.Sub(b.Sub(wx, half_norm), c)), b.Sqrt(m))
    b.rename(b.CastLike(b.Add(phi, b.const(attrs["eps"], np.float32)), "x"), "features")
    return b.build(["x", "w"], ["features"])


SPEC = OpSpec(
    name="PerformerFeatures",
    doc=__doc__,
    inputs=(
        TensorArg("x", "[B, H, N, D]", "queries or keys"),
        TensorArg("w", "[M, D]", "random projection (orthogonal blocks, chi-distributed row norms)"),
    ),
    outputs=(TensorArg("features", "[B, H, N, M]", "positive features, dtype of x"),),
    attributes=(
        Attr("kind", str, "query", "query: stabiliser per row; key: one stabiliser over all keys; "
             "key_fixed: c = offset for every key (causal-safe)", choices=KINDS),
        Attr("eps", float, 1e-4, "added to every feature, so no key's weight underflows to zero",
             low=0.0, high=1.0),
        Attr("offset", float, 0.0, "key_fixed: the constant c subtracted from every key's W x'; "
             "unused by query and key"),
    ),
    reference=reference,
    function_body=function_body,
    plugin=PluginSpec("PerformerFeatures"),
)
