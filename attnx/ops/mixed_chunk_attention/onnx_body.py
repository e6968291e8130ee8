"""MixedChunkAttention's ONNX local function."""

from __future__ import annotations

import numpy as np

from attnx.ops.function_builder import FunctionBuilder


def function_body(b: FunctionBuilder, attrs, n_inputs: int, n_outputs: int):
    """Chunked: [N/g, g, g] products inside chunks; the linear part as Q'(K'ᵀV), causal by an
    exclusive CumSum over per-chunk states [B, H, N/g, S, E]. float32 inside. The bias
    [B|1, H|1, g|1, g|1] is added to every chunk's scores; a short last chunk's padded keys are zero
    in v, so whatever the bias adds there is multiplied by 0."""
    names = ["quad_q", "quad_k", "lin_q", "lin_k", "v"]
    qq, qk, lq, lk, v = (b.Cast(x, to=1) for x in names)
    g, causal = attrs["chunk_size"], attrs["causal"]
    n = b.Shape(qq, start=2, end=3)
    c = b.const([g])
    pad = b.Mod(b.Sub(c, b.Mod(n, c)), c)
    pads = b.Concat(b.const([0, 0, 0, 0, 0, 0]), pad, b.const([0]), axis=0)

    def chunked(x):  # [B, H, N, S] → [B, H, N/g, g, S], zero-padded: padded keys add nothing
        x = b.Pad(x, pads)
        return b.Reshape(x, b.Concat(b.Shape(x, end=2), b.const([-1, g]), b.Shape(x, start=3), axis=0))

    qq, qk, lq, lk, vc = (chunked(x) for x in (qq, qk, lq, lk, v))
    s_q = attrs["quad_scale"] or 1.0 / g
    scores = b.Mul(b.MatMul(qq, b.Transpose(qk, perm=[0, 1, 2, 4, 3])), b.const(s_q, np.float32))
    if n_inputs == 6:  # [B|1, H|1, 1, g|1, g|1]: the same bias in every chunk
        scores = b.Add(scores, b.Unsqueeze(b.Cast("bias", to=1), b.const([2])))
    quad = b.Relu(scores)
    quad = b.Mul(quad, quad)                                                    # [B, H, N/g, g, g]
    if causal:
        inside = b.Range(b.const(0), b.const(g), b.const(1))
        below = b.GreaterOrEqual(b.Unsqueeze(inside, b.const([1])), inside)
        quad = b.Where(below, quad, b.const(0.0, np.float32))
    kv = b.MatMul(b.Transpose(lk, perm=[0, 1, 2, 4, 3]), vc)                    # [B, H, N/g, S, E]
    if causal:
        state = b.CumSum(kv, b.const(2), exclusive=1)
        s_l = b.const(attrs["lin_scale"] or 1.0 / g, np.float32)
    else:
        state = b.ReduceSum(kv, b.const([2]), keepdims=1)
        s_l = (b.const(attrs["lin_scale"], np.float32) if attrs["lin_scale"]
               else b.Reciprocal(b.Cast(n, to=1)))
    y = b.Add(b.MatMul(quad, vc), b.Mul(b.MatMul(lq, state), s_l))            # [B, H, N/g, g, E]
    y = b.Reshape(y, b.Concat(b.Shape(y, end=2), b.const([-1]), b.Shape(y, start=4), axis=0))
    y = b.Slice(y, b.const([0]), n, b.const([2]))
    b.rename(b.CastLike(y, "quad_q"), "y")
    return b.build([*names, "bias"][:n_inputs], ["y"])
