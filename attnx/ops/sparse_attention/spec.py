"""SparseAttention: softmax attention over a structured key set (VARIANTS.md, "Sparse attention").

The mask is the definition. With d = i − j (query i, key j, both in [0, N)):

- local:   |d| ≤ w;               causal: 0 ≤ d < w (w keys, the query's own included)
- dilated: d mod r = 0, |d| ≤ w·r; causal: d mod r = 0, 0 ≤ d < w·r (dilation 1 is local)
- strided: local(w) ∪ {d mod t = 0}; causal: both parts with d ≥ 0
- block:   ⌊i/b⌋ = ⌊j/b⌋;          causal: and d ≥ 0 (TransNormer's DiagAttention)

Every pattern holds j = i, so no row is empty. `scale` 0 means 1/√D. Keys and values have
the queries' length. The function body touches only allowed keys: local and dilated gather
a window of keys per query ([B, H, N, L, D], L = 2w+1 or w); strided adds, per residue
mod t, the [N/t, N/t] products of queries and keys of that residue; block works on
[N/b, b, b] tiles. No tensor has two axes of length N.
"""

from __future__ import annotations

from attnx.ops.sparse_attention.naive import reference
from attnx.ops.sparse_attention.onnx_body import function_body
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

PATTERNS = ("local", "dilated", "strided", "block")

SPEC = OpSpec(
    name="SparseAttention",
    doc=__doc__,
    inputs=(
        TensorArg("q", "[B, H, N, D]", "queries"),
        TensorArg("k", "[B, H, N, D]", "keys, as many as queries"),
        TensorArg("v", "[B, H, N, E]", "values"),
    ),
    outputs=(TensorArg("y", "[B, H, N, E]", "attention output, dtype of q"),),
    attributes=(
        Attr("pattern", str, "local", "which keys a query sees (module docstring)", choices=PATTERNS),
        Attr("window", int, 16, "local half-width w (causal: w keys back, the query's own included); "
             "local, dilated and strided", low=1, high=4096),
        Attr("dilation", int, 2, "dilated: every r-th key within w·r", low=1, high=4096),
        Attr("stride", int, 16, "strided: also every t-th key", low=1, high=4096),
        Attr("block", int, 64, "block: tile length b", low=1, high=4096),
        Attr("causal", bool, False, "keys j <= i only"),
        Attr("scale", float, 0.0, "multiplies q·k; 0 means 1/sqrt(D)", low=0.0),
    ),
    reference=reference,
    body=function_body,
    plugin=PluginSpec("SparseAttention"),
)
