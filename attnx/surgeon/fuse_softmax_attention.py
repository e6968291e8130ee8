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

from attnx.surgeon.attention_pattern import QuadraticAttention, check_scores_not_reused, quadratic_matches
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, is_scalar_shaped, scalar_constant
from attnx.surgeon.layout import fits, replace_attention
from attnx.surgeon.masks import LOWER, STRICT_UPPER, triangle

ATTENTION_OPSET = 23
# a finite fill this negative vanishes in softmax exactly as -inf does (exp underflows to 0)
MASK_FILL_MAX = -1e9


def _scale_factor(step: gs.Node, data: gs.Tensor) -> float | None:
    if step.op not in ("Mul", "Div"):
        return None
    other = step.inputs[1] if step.inputs[0] is data else step.inputs[0]
    value = scalar_constant(other) if is_scalar_shaped(other) else None
    if value is None or value == 0 or (step.op == "Div" and step.inputs[0] is not data):
        return None
    return value if step.op == "Mul" else 1.0 / value


def _causal_fill(step: gs.Node, data: gs.Tensor) -> bool | None:
    """True for Where(causal mask, S, -inf); False for another Where mask; None for no mask."""
    if step.op != "Where":
        return None
    fill = next(t for t in step.inputs[1:] if t is not data)
    value = scalar_constant(fill)
    if value is None or value > MASK_FILL_MAX:
        return None
    return triangle(step.inputs[0]) == (LOWER if step.inputs[1] is data else STRICT_UPPER)


class FuseSoftmaxAttention(Pass):
    name = "fuse-softmax-attention"
    summary = "softmax(s·QKᵀ [causal])·V → ONNX Attention (opset 23)"
    min_opset = ATTENTION_OPSET

    def find(self, graph: gs.Graph) -> list[Match]:
        # softmax-free attention is reassociation's
        return quadratic_matches(graph, lambda att: bool(att.steps) and att.steps[-1].op == "Softmax", self._checks)

    def _checks(self, match: Match, att: QuadraticAttention) -> None:
        softmax = att.steps[-1]
        axis = int(softmax.attrs.get("axis", -1)) % len(att.a.labels)
        if not match.check("softmax_over_keys", att.a.labels[axis] == att.m,
                           f"Softmax over axis {axis} ({'keys' if att.a.labels[axis] == att.m else 'not the keys'})"):
            return
        scale, causal, other = 1.0, None, []
        tensor = att.scores.output
        for step in att.steps[:-1]:
            if (factor := _scale_factor(step, tensor)) is not None:
                scale *= factor
            elif causal is None and (mask := _causal_fill(step, tensor)) is not None:
                causal = mask
            else:
                other.append(step.op)
            tensor = step.outputs[0]
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
