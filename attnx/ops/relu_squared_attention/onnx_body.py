"""ReluSquaredAttention's ONNX local function."""

from __future__ import annotations

import numpy as np

from attnx.ops.function_builder import FunctionBuilder


def function_body(b: FunctionBuilder, attrs, n_inputs: int, n_outputs: int):
    """relu² attention with its [N, M] score matrix: quadratic by nature, as the op itself is.

    The TensorRT plugin tiles it like flash attention; this body is the portable definition.
    """
    f32 = np.float32
    q, k, v = (b.Cast(x, to=1) for x in ("q", "k", "v"))
    if attrs["scale"]:
        scale = b.const(attrs["scale"], f32)
    else:
        scale = b.Reciprocal(b.Sqrt(b.Cast(b.Shape(q, start=3), to=1)))
    scores = b.Mul(b.MatMul(q, b.Transpose(k, perm=[0, 1, 3, 2])), scale)          # [B, H, N, M]
    if n_inputs == 4:
        scores = b.Add(scores, b.Cast("bias", to=1))
    norm = attrs["norm"]
    if norm == "visible" and attrs["causal"]:
        n = b.Squeeze(b.Shape(q, start=2, end=3), b.const([0]))
        visible = b.Range(b.const(1.0, f32), b.Add(b.Cast(n, to=1), b.const(1.0, f32)), b.const(1.0, f32))
        lengths = b.Unsqueeze(visible, b.const([1]))                                # [N, 1]
    elif norm in ("n", "visible"):
        lengths = b.Cast(b.Shape(k, start=2, end=3), to=1)                          # M
    else:
        lengths = b.const(float(attrs["fixed_length"]) if norm == "fixed" else 1.0, f32)
    if attrs["norm_placement"] == "inside":
        a = b.Relu(b.Div(scores, lengths))
        a = b.Mul(a, a)
    else:
        a = b.Relu(scores)
        a = b.Div(b.Mul(a, a), lengths)
    if attrs["causal"]:
        a = b.Trilu(a, upper=0)
    b.rename(b.CastLike(b.MatMul(a, v), "q"), "y")
    return b.build(["q", "k", "v", "bias"][:n_inputs], ["y"])
