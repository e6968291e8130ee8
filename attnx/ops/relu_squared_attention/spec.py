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

from attnx.ops.relu_squared_attention.naive import reference
from attnx.ops.relu_squared_attention.onnx_body import function_body
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

NORMS = ("n", "visible", "fixed", "none")
PLACEMENTS = ("outside", "inside")

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
    body=function_body,
    plugin=PluginSpec("ReluSquaredAttention"),
)
