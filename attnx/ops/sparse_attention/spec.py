"""SparseAttention: softmax attention over a structured key set (VARIANTS.md, "Sparse attention").

The mask is the definition. With d = i − j (query i, key j, both in [0, N)):

- local:   |d| ≤ w;               causal: 0 ≤ d < w (w keys, the query's own included)
- dilated: d mod r = 0, |d| ≤ w·r; causal: d mod r = 0, 0 ≤ d < w·r (dilation 1 is local)
- strided: local(w) ∪ {d mod t = 0}; causal: both parts with d ≥ 0
- block:   ⌊i/b⌋ − a ≤ ⌊j/b⌋ ≤ ⌊i/b⌋ + c, a = look_back, c = look_ahead tiles; causal: and
           d ≥ 0. a = c = 0 (the default) is the query's own tile, TransNormer's DiagAttention;
           a ≥ 1 is local-attention's bucketed window (buckets of b, look-back / look-ahead)

Every pattern holds j = i, so no row is empty. `scale` 0 means 1/√D. Keys and values have
the queries' length. The function body touches only allowed keys: local and dilated gather
a window of keys per query ([B, H, N, L, D], L = 2w+1 or w); strided adds, per residue
mod t, the [N/t, N/t] products of queries and keys of that residue; block works on
[N/b, b, (1 + a + c)·b] tiles, each tile beside its neighbours. No tensor has two axes of length N.
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
        Attr("look_back", int, 0, "block: also the tiles this many before the query's own", low=0, high=4096),
        Attr("look_ahead", int, 0, "block: also the tiles this many after the query's own", low=0, high=4096),
    ),
    reference=reference,
    body=function_body,
    plugin=PluginSpec("SparseAttention"),
)
