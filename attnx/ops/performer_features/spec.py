"""PerformerFeatures: FAVOR+ positive random features (Choromanski et al. 2021, VARIANTS.md).

φ(x) = exp(W x' − ‖x'‖²/2 − c) / √M + eps with x' = x · D^(-1/4), W [M, D] an input (the
projection, an initializer in exported models). The stabiliser c is a maximum of W x':
over the row's M features for queries (`kind` query), and one constant per batch and head
over all keys and features for keys (`kind` key): a constant shared by every key cancels in
linear attention's normaliser, a per-key one would reweight the keys. The features feed
`LinearAttention(feature_map="identity")`.

Because the key stabiliser spans the whole key set, a causal model's features of key j
depend on later keys through c (up to eps, the attention output does not), so no prefix
state reproduces the full run. `kind` key_fixed is the causal-safe choice: c = `offset`, a
data-independent constant, still one value shared by every key (so it cancels the same
way), and each key's features depend on that key alone. Without a data-dependent maximum
nothing guards exp against overflow; W x' − ‖x'‖²/2 ≤ ‖w‖²/2 bounds the exponent, and
`offset` lowers it where that bound is too large for the dtype. The paper's
sequence maximum (key) stays the choice for non-causal attention.
"""

from __future__ import annotations

from attnx.ops.performer_features.naive import reference
from attnx.ops.performer_features.onnx_body import function_body
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

KINDS = ("query", "key", "key_fixed")

SPEC = OpSpec(
    name="PerformerFeatures",
    doc=__doc__,
    inputs=(
        TensorArg("x", "[B, H, N, D]", "queries or keys"),
        TensorArg("w", "[M, D]", "random projection (orthogonal blocks, chi-distributed row norms)"),
    ),
    outputs=(TensorArg("features", "[B, H, N, M]", "positive features, dtype of x"),),
    attributes=(
        Attr("kind", str, "query", "query: stabiliser per row; key: one stabiliser over all keys; "
             "key_fixed: c = offset for every key (causal-safe)", choices=KINDS),
        Attr("eps", float, 1e-4, "added to every feature, so no key's weight underflows to zero",
             low=0.0, high=1.0),
        Attr("offset", float, 0.0, "key_fixed: the constant c subtracted from every key's W x'; "
             "unused by query and key"),
    ),
    reference=reference,
    body=function_body,
    plugin=PluginSpec("PerformerFeatures"),
)
