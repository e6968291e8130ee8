"""Fusion: softmax(s·Q·Kᵀ [masked causal])·V → ONNX Attention (opset 23).

Pattern: the quadratic attention pattern whose steps end in a Softmax.
Checks:
  softmax_over_keys     the Softmax normalises over the key axis
  steps_scale_mask      before it only constant scalar scales and at most one causal -inf mask
  mask_is_causal        the mask keeps j ≤ i over the (query, key) axes (→ is_causal=1)
  scores_not_reused     the N×N intermediates feed nothing else (e.g. returned weights)
  fits_attention        at most [B, H] batch axes
Rewrite: Attention(q, k, v; scale = the product of the scales, is_causal), in [B, H, N, D]
with layouts restored. ONNX Runtime and TensorRT run Attention natively; no plugin.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from attnx.surgeon.attention_pattern import (QuadraticAttention, check_scores_not_reused, quadratic_candidates,
                                             softmax_over_keys)
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter
from attnx.surgeon.layout import fits, replace_attention
from attnx.surgeon.readers import NEG_INF_FILL, causal_where, constant_factor

ATTENTION_OPSET = 23


class FuseSoftmaxAttention(Pass):
    name = "fuse-softmax-attention"
    summary = "softmax(s·QKᵀ [causal])·V → ONNX Attention (opset 23)"
    min_opset = ATTENTION_OPSET

    def candidates(self, graph: gs.Graph):
        # softmax-free attention is reassociation's
        return quadratic_candidates(graph, lambda att: bool(att.steps) and att.steps[-1].op == "Softmax")

    def checks(self, match: Match, graph: gs.Graph, att: QuadraticAttention) -> None:
        if not softmax_over_keys(match, att):
            return
        scale, causal, other = 1.0, None, []
        for step, tensor in att.step_inputs()[:-1]:
            if (factor := constant_factor(step, tensor)) is not None:
                scale *= factor
            elif causal is None and (mask := causal_where(step, tensor, {NEG_INF_FILL})) is not None:
                causal = mask
            else:
                other.append(step.op)
        if not match.check("steps_scale_mask", not other,
                           f"{', '.join(other)} before the Softmax is neither a constant scale nor a -inf mask"
                           if other else "only constant scales and a mask before the Softmax"):
            return
        if causal is not None and not match.check(
                "mask_is_causal", causal and att.a.labels[-2:] == att.n + att.m,
                "a -inf mask keeping j ≤ i over (query, key)" if causal else "a mask that is not causal-triangular"):
            return
        if not check_scores_not_reused(match, att):
            return
        match.check("fits_attention", *fits(att.batch, "Attention"))
        match.bound = (att, scale, bool(causal))

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        att, scale, causal = match.bound
        replace_attention(Emitter(graph, f"attnx_fuse_softmax/{att.product.node.name}"), att, "Attention",
                          {"scale": float(scale), "is_causal": int(causal)})
        return f"softmax attention → Attention(scale={scale:g}, is_causal={int(causal)})"
