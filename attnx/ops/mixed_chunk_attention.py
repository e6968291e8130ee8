"""MixedChunkAttention: FLASH's mixed chunk attention (Hua et al. 2022, VARIANTS.md).

Positions split into chunks of g = `chunk_size` (the tail padded inside the op). With c(i)
the chunk of position i:

  y_i = Σ_{j: c(j) = c(i)} relu(s_q · q_i·k_j)² v_j          quadratic, inside the chunk
      + s_l · Σ_{j ∈ J(i)} (q'_i·k'_j) v_j                    linear, across chunks

q, k are the quadratic part's queries and keys, q', k' the linear part's. Non-causal:
J(i) = all positions, s_l = 1/N. Causal: the quadratic part keeps j ≤ i and
J(i) = {j : c(j) < c(i)} (an exclusive prefix over earlier chunks), s_l = 1/g. s_q = 1/g
sits inside the square as in the paper's code. `quad_scale` and `lin_scale` override s_q
and s_l; 0 keeps these defaults.
"""

from __future__ import annotations

import numpy as np
import torch

from attnx.ops.function_builder import FunctionBuilder
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg


def scales(n, *, causal, chunk_size, quad_scale, lin_scale) -> tuple[float, float]:
    """(s_q, s_l) for sequence length n, defaults filled in."""
    s_q = quad_scale or 1.0 / chunk_size
    s_l = lin_scale or (1.0 / chunk_size if causal else 1.0 / n)
    return s_q, s_l


def reference(quad_q, quad_k, lin_q, lin_k, v, *, causal, chunk_size, quad_scale, lin_scale):
    """Float64 definition, dense. quad_q/quad_k/lin_q/lin_k [B, H, N, S], v [B, H, N, E] → (y,)."""
    qq, qk, lq, lk, v = (x.double() for x in (quad_q, quad_k, lin_q, lin_k, v))
    n = qq.shape[2]
    s_q, s_l = scales(n, causal=causal, chunk_size=chunk_size, quad_scale=quad_scale, lin_scale=lin_scale)
    pos = torch.arange(n)
    chunk = torch.div(pos, chunk_size, rounding_mode="floor")
    same = chunk[:, None] == chunk[None, :]
    if causal:
        same = same & (pos[:, None] >= pos[None, :])
        across = chunk[:, None] > chunk[None, :]
    else:
        across = torch.ones(n, n, dtype=torch.bool)
    quad = torch.relu(s_q * qq @ qk.transpose(-1, -2)).square() * same
    lin = s_l * (lq @ lk.transpose(-1, -2)) * across
    return ((quad + lin) @ v,)


def function_body(attrs, n_inputs: int, n_outputs: int, opset: int):
    """Chunked: [N/g, g, g] products inside chunks; the linear part as Q'(K'ᵀV), causal by an
    exclusive CumSum over per-chunk states [B, H, N/g, S, E]. float32 inside."""
    b = FunctionBuilder(SPEC.domain, SPEC.name, SPEC.overload(attrs, n_inputs, n_outputs), opset)
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
    quad = b.Relu(b.Mul(b.MatMul(qq, b.Transpose(qk, perm=[0, 1, 2, 4, 3])), b.const(s_q, np.float32)))
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
    return b.build(names, ["y"])


SPEC = OpSpec(
    name="MixedChunkAttention",
    doc=__doc__,
    inputs=(
        TensorArg("quad_q", "[B, H, N, S]", "queries of the quadratic (in-chunk) part"),
        TensorArg("quad_k", "[B, H, N, S]", "keys of the quadratic part"),
        TensorArg("lin_q", "[B, H, N, S]", "queries of the linear (across-chunk) part"),
        TensorArg("lin_k", "[B, H, N, S]", "keys of the linear part"),
        TensorArg("v", "[B, H, N, E]", "values"),
    ),
    outputs=(TensorArg("y", "[B, H, N, E]", "attention output, dtype of quad_q"),),
    attributes=(
        Attr("causal", bool, False, "quadratic part j <= i, linear part over earlier chunks only"),
        Attr("chunk_size", int, 256, "chunk length g; the tail is padded inside the op", low=1, high=4096),
        Attr("quad_scale", float, 0.0, "s_q inside relu(s_q·q·k)²; 0 means 1/g", low=0.0),
        Attr("lin_scale", float, 0.0, "s_l on the linear part; 0 means 1/N (causal: 1/g)", low=0.0),
    ),
    reference=reference,
    function_body=function_body,
    plugin=PluginSpec("MixedChunkAttention"),
)
