"""PerformerFeatures' ONNX local function."""

from __future__ import annotations

import numpy as np

from attnx.ops.function_builder import FunctionBuilder


def function_body(b: FunctionBuilder, attrs, n_inputs: int, n_outputs: int):
    """Elementwise after one [N, D] × [D, M] MatMul; float32 inside."""
    x, w = b.Cast("x", to=1), b.Cast("w", to=1)
    d, m = b.Cast(b.Shape(x, start=3), to=1), b.Cast(b.Shape(w, end=1), to=1)
    x = b.Mul(x, b.Pow(d, b.const(-0.25, np.float32)))
    wx = b.MatMul(x, b.Transpose(w, perm=[1, 0]))                                     # [B, H, N, M]
    if attrs["kind"] == "key_fixed":
        c = b.const(attrs["offset"], np.float32)
    else:
        axes = [-1] if attrs["kind"] == "query" else [-2, -1]
        # ReduceMax takes its axes as an input from opset 18 on, as an attribute before
        c = (b.ReduceMax(wx, b.const(axes), keepdims=1) if b.opset >= 18 else
             b.ReduceMax(wx, axes=axes, keepdims=1))
    half_norm = b.Div(b.ReduceSum(b.Mul(x, x), b.const([-1]), keepdims=1), b.const(2.0, np.float32))
    phi = b.Div(b.Exp(b.Sub(b.Sub(wx, half_norm), c)), b.Sqrt(m))
    b.rename(b.CastLike(b.Add(phi, b.const(attrs["eps"], np.float32)), "x"), "features")
    return b.build(["x", "w"], ["features"])
