"""MixedChunkAttention: FLASH's mixed chunk attention (Hua et al. 2022, VARIANTS.md).

Positions split into chunks of g = `chunk_size` (the tail padded inside the op). With c(i)
the chunk of position i:

  y_i = Σ_{j: c(j) = c(i)} relu(s_q · q_i·k_j + b_{i mod g, j mod g})² v_j    quadratic, inside the chunk
      + s_l · Σ_{j ∈ J(i)} (q'_i·k'_j) v_j                                    linear, across chunks

q, k are the quadratic part's queries and keys, q', k' the linear part's. b is the optional
in-chunk `bias` [g, g], indexed by the positions inside the chunk and so the same in every chunk
(a relative-position bias such as T5's, which FLASH adds to its in-chunk scores), 0 when absent;
only real positions j < N are summed, so the bias of the padded tail is never read. Non-causal:
J(i) = all positions, s_l = 1/N. Causal: the quadratic part keeps j ≤ i and
J(i) = {j : c(j) < c(i)} (an exclusive prefix over earlier chunks), s_l = 1/g. s_q = 1/g
sits inside the square as in the paper's code. `quad_scale` and `lin_scale` override s_q
and s_l; 0 keeps these defaults.
"""

from __future__ import annotations

from attnx.ops.mixed_chunk_attention.naive import reference
from attnx.ops.mixed_chunk_attention.onnx_body import function_body
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

SPEC = OpSpec(
    name="MixedChunkAttention",
    doc=__doc__,
    inputs=(
        TensorArg("quad_q", "[B, H, N, S]", "queries of the quadratic (in-chunk) part"),
        TensorArg("quad_k", "[B, H, N, S]", "keys of the quadratic part"),
        TensorArg("lin_q", "[B, H, N, S]", "queries of the linear (across-chunk) part"),
        TensorArg("lin_k", "[B, H, N, S]", "keys of the linear part"),
        TensorArg("v", "[B, H, N, E]", "values"),
        TensorArg("bias", "[B|1, H|1, g|1, g|1]", "added to s_q·q·k inside each chunk at (i mod g, j mod g); "
                  "each axis 1 (broadcast) or full", optional=True),
    ),
    outputs=(TensorArg("y", "[B, H, N, E]", "attention output, dtype of quad_q"),),
    attributes=(
        Attr("causal", bool, False, "quadratic part j <= i, linear part over earlier chunks only"),
        Attr("chunk_size", int, 256, "chunk length g; the tail is padded inside the op", low=1, high=4096),
        Attr("quad_scale", float, 0.0, "s_q inside relu(s_q·q·k)²; 0 means 1/g", low=0.0),
        Attr("lin_scale", float, 0.0, "s_l on the linear part; 0 means 1/N (causal: 1/g)", low=0.0),
    ),
    reference=reference,
    body=function_body,
    plugin=PluginSpec("MixedChunkAttention"),
)
