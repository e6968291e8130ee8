"""ReluSquaredAttention: GAU's attention (Hua et al. 2022, "Transformer Quality in Linear Time").

y_i = Σ_j A_ij v_j with A = relu(s·q_i·k_j + b_ij)² / L_i (`norm_placement` outside, the paper's
text) or relu((s·q_i·k_j + b_ij) / L_i)² (inside, as some public code writes it), over all keys or
j ≤ i when causal. b is the optional additive `bias` (a relative-position bias such as T5's, which
public GAU code adds to the scores), 0 when absent. s = `scale`, or 1/√D when `scale` is 0. The length norm L_i (`norm`): `n` the sequence
length (the number of keys), `visible` row i's visible count (i + 1 when causal), `fixed` the
constant `fixed_length`, `none` 1. With `n` every row depends on the total length, which is why
such a model does not stream and does not generalise past its training length (VARIANTS.md).
"""

from __future__ import annotations

import numpy as np
import torch

from attnx.ops.function_builder import FunctionBuilder
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

NORMS = ("n", "visible", "fixed", "none")
PLACEMENTS = ("outside", "inside")


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


def function_body(attrs, n_inputs: int, n_outputs: int, opset: int):
    """relu² attention with its [N, M] score matrix: quadratic by nature, as the op itself is.

    The TensorRT plugin tiles it like flash attention; this body is the portable definition.
    """
    b = FunctionBuilder(SPEC.domain, SPEC.name, SPEC.overload(attrs, n_inputs, n_outputs), opset)
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


SPEC = OpSpec(
    name="ReluSquaredAttention",
    doc=__doc__,
    inputs=(
        TensorArg("q", "[B, H, N, D]", "queries"),
        TensorArg("k", "[B, H, M, D]", "keys (M = N when causal)"),
        TensorArg("v", "[B, H, M, E]", "values"),
        TensorArg("bias", "[B|1, H|1, N|1, M|1]", "added to s·qkᵀ before the norm and the relu; each axis 1 "
                  "(broadcast) or full", optional=True),
    ),
    outputs=(TensorArg("y", "[B, H, N, E]", "attention output, dtype of q"),),
    attributes=(
        Attr("causal", bool, False, "keys j ≤ i only (requires M = N)"),
        Attr("scale", float, 0.0, "s in relu(s·qkᵀ); 0 means 1/√D", low=0.0),
        Attr("norm", str, "n", "length norm L: n keys, visible count, fixed_length, or none", choices=NORMS),
        Attr("fixed_length", int, 512, "L when norm is fixed", low=1),
        Attr("norm_placement", str, "outside", "relu(s·qkᵀ)²/L (outside) or relu(s·qkᵀ/L)² (inside)",
             choices=PLACEMENTS),
    ),
    reference=reference,
    function_body=function_body,
    plugin=PluginSpec("ReluSquaredAttention"),
)
