"""LinearAttention ("Transformers are RNNs", Katharopoulos et al. 2020).

y_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + eps) with S = Σ_j φ(k_j) v_jᵀ and z = Σ_j φ(k_j) over all
keys, or over j ≤ i when causal. Without `normalize` the denominator is dropped (TransNormer's
NormAttention normalises the output with a norm layer instead). An optional float32 state
(S₀ [B, H, D, E], z₀ [B, H, D]) stands for keys before this block, seen by every query; the
state outputs are S₀ + Σ_j φ(k_j) v_jᵀ and z₀ + Σ_j φ(k_j) over the whole block.
"""

from __future__ import annotations

from attnx.ops.linear_attention.naive import reference
from attnx.ops.linear_attention.onnx_body import function_body
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

SPEC = OpSpec(
    name="LinearAttention",
    doc=__doc__,
    inputs=(
        TensorArg("q", "[B, H, N, D]", "queries"),
        TensorArg("k", "[B, H, M, D]", "keys (M = N when causal)"),
        TensorArg("v", "[B, H, M, E]", "values"),
        TensorArg("state_s", "[B, H, D, E]", "initial Σφ(k)vᵀ; with state_z or not at all",
                  optional=True, float32_only=True),
        TensorArg("state_z", "[B, H, D]", "initial Σφ(k)", optional=True, float32_only=True),
    ),
    outputs=(
        TensorArg("y", "[B, H, N, E]", "attention output, dtype of q"),
        TensorArg("state_s_out", "[B, H, D, E]", "state after this block", optional=True, float32_only=True),
        TensorArg("state_z_out", "[B, H, D]", "key sum after this block", optional=True, float32_only=True),
    ),
    attributes=(
        Attr("causal", bool, False, "keys j ≤ i only (requires M = N)"),
        Attr("feature_map", str, "elu", "φ applied to q and k: elu+1, relu, or identity "
             "(features computed elsewhere, e.g. PerformerFeatures)", choices=("elu", "relu", "identity")),
        Attr("normalize", bool, True, "divide by φ(q)·Σφ(k) + eps"),
        Attr("eps", float, 1e-6, "added to the denominator", low=0.0, low_open=True, high=1.0),
        Attr("chunk_size", int, 64, "tile length of the causal chunked form; no effect on results",
             low=1, high=4096),
    ),
    reference=reference,
    body=function_body,
    plugin=PluginSpec("LinearAttention"),
)
