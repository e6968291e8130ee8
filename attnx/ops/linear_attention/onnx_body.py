"""LinearAttention's ONNX local function: linear in N, never an N×N tensor."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from attnx.ops.function_builder import FunctionBuilder


def _feature_map(b: FunctionBuilder, x: str, name: str) -> str:
    if name == "elu":
        return b.Add(b.Elu(x), b.const(1.0, "float32"))
    if name == "relu":
        return b.Relu(x)
    return x


def function_body(b: FunctionBuilder, attrs, n_inputs: int, n_outputs: int):
    """The linear-cost ONNX body: Q(KᵀV) when non-causal; chunked when causal.

    Causal: pad N to a multiple of the chunk C (after φ, so padded keys add nothing), a
    C×C masked product inside each chunk, and an exclusive CumSum over chunk states
    [B, H, N/C, D, E] for the earlier chunks. No tensor grows as N×N.
    """
    f32 = 1
    q, k, v = (b.Cast(x, to=f32) for x in ("q", "k", "v"))
    fq, fk = _feature_map(b, q, attrs["feature_map"]), _feature_map(b, k, attrs["feature_map"])
    has_state = n_inputs == 5
    eps = b.const(attrs["eps"], "float32")
    axes_last = b.const([-1])

    if not attrs["causal"]:
        kv = b.MatMul(b.Transpose(fk, perm=[0, 1, 3, 2]), v)                # [B, H, D, E]
        ksum = b.ReduceSum(fk, b.const([2]), keepdims=1)                    # [B, H, 1, D]
        if has_state:
            kv = b.Add(kv, "state_s")
            ksum = b.Add(ksum, b.Unsqueeze("state_z", b.const([2])))
        y = b.MatMul(fq, kv)                                                 # [B, H, N, E]
        if attrs["normalize"]:
            den = b.ReduceSum(b.Mul(fq, ksum), axes_last, keepdims=1)       # [B, H, N, 1]
            y = b.Div(y, b.Add(den, eps))
        s_total, z_total = kv, b.Squeeze(ksum, b.const([2]))
    else:
        chunk = attrs["chunk_size"]
        shape = b.Shape(q)
        n = b.Shape(q, start=2, end=3)
        c = b.const([chunk])
        pad = b.Mod(b.Sub(c, b.Mod(n, c)), c)
        zeros6 = b.const([0, 0, 0, 0, 0, 0])
        pads = b.Concat(zeros6, pad, b.const([0]), axis=0)

        def chunked(x):  # [B, H, N, D] → [B, H, N/C, C, D], zero-padded
            x = b.Pad(x, pads)
            return b.Reshape(x, b.Concat(b.Shape(x, end=2), b.const([-1, chunk]), b.Shape(x, start=3), axis=0))

        qc, kc, vc = chunked(fq), chunked(fk), chunked(v)
        mask = b.Trilu(b.ConstantOfShape(b.const([chunk, chunk]), value=_f32_tensor(1.0)), upper=0)
        scores = b.Mul(b.MatMul(qc, b.Transpose(kc, perm=[0, 1, 2, 4, 3])), mask)  # [B, H, N/C, C, C]
        kv = b.MatMul(b.Transpose(kc, perm=[0, 1, 2, 4, 3]), vc)                    # [B, H, N/C, D, E]
        s_prev = b.CumSum(kv, b.const(2), exclusive=1)
        if has_state:
            s_prev = b.Add(s_prev, b.Unsqueeze("state_s", b.const([2])))
        y = b.Add(b.MatMul(scores, vc), b.MatMul(qc, s_prev))                       # [B, H, N/C, C, E]
        ksum = b.ReduceSum(kc, b.const([3]), keepdims=1)                            # [B, H, N/C, 1, D]
        if attrs["normalize"]:
            z_prev = b.CumSum(ksum, b.const(2), exclusive=1)
            if has_state:
                z_prev = b.Add(z_prev, b.Unsqueeze("state_z", b.const([2, 3])))
            den = b.Add(b.ReduceSum(scores, axes_last, keepdims=1),
                        b.ReduceSum(b.Mul(qc, z_prev), axes_last, keepdims=1))
            y = b.Div(y, b.Add(den, eps))
        y = b.Reshape(y, b.Concat(b.Shape(y, end=2), b.const([-1]), b.Shape(y, start=4), axis=0))
        y = b.Slice(y, b.const([0]), b.Gather(shape, b.const([2])), b.const([2]))
        s_total = b.ReduceSum(kv, b.const([2]), keepdims=0)
        z_total = b.ReduceSum(ksum, b.const([2, 3]), keepdims=0)
        if has_state:
            s_total, z_total = b.Add(s_total, "state_s"), b.Add(z_total, "state_z")

    b.rename(b.CastLike(y, "q"), "y")
    outputs = ["y"]
    if n_outputs == 3:
        b.rename(s_total, "state_s_out")
        b.rename(z_total, "state_z_out")
        outputs += ["state_s_out", "state_z_out"]
    inputs = ["q", "k", "v"] + (["state_s", "state_z"] if has_state else [])
    return b.build(inputs, outputs)


def _f32_tensor(value: float):
    return numpy_helper.from_array(np.array([value], dtype=np.float32))
