"""Reassociation: (Q·Kᵀ)·V → Q·(Kᵀ·V), O(N²·d) → O(N·d²), for attention without a softmax.

Pattern: Y = A·V with A = steps(Q·Kᵀ) (`attention_pattern.find_quadratic`).
Checks:
  softmax_free               no Softmax between the products (it does not commute with ·V)
  steps_commute              every step is a scalar scale, a causal mask or the row-sum
                             normaliser; those move past the second product
  mask_is_causal             a mask keeps j ≤ i over the (query, key) axes of a square product
  scores_not_reused          the N×N intermediates feed nothing else (else they stay computed)
  reassociation_saves_flops  n·m·(d+e) > (n+m)·d·e by symbolic shapes (attnx.surgeon.shapes)
Rewrite: a scale moves onto q; the row-sum normaliser Σ_m A becomes q·Σ_m k. Non-causal:
standard MatMuls, Q·(KᵀV) and q·Σk. Causal: the causal `LinearAttention` node (its body is
the chunked linear form; a causal prefix in standard ops would be the N×d×e CumSum), with
the feature map q and k share absorbed when there is no scale.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from attnx.surgeon import attnx_node
from attnx.surgeon.attention_pattern import (QuadraticAttention, check_scores_not_reused, quadratic_candidates,
                                             reduce_axes)
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, rank, scalar_constant, take_over
from attnx.surgeon.readers import ZERO_FILL, causal_mask, scalar_operand, shared_feature_map
from attnx.surgeon.shapes import fmt, reassociation_gain


def _classify(att: QuadraticAttention) -> tuple[list, list, bool, list[str]]:
    """(scales, masks, causal, problems) of the steps between the products."""
    scales, masks, problems = [], [], []
    for step, tensor in att.step_inputs():
        if att.row_sum is not None and att.row_sum.before_product and step is att.row_sum.division:
            pass
        elif step.op == "Softmax":
            problems.append("softmax")
        elif (s := scalar_operand(step, tensor)) is not None:  # a dynamic scale (1/n) commutes too
            scales.append((step, s))
        elif (mask := causal_mask(step, tensor, {ZERO_FILL})) is not None:
            masks.append((step, mask))
        else:
            problems.append(step.op)
    return scales, masks, bool(masks), problems


def _row_sum_axes(att: QuadraticAttention) -> tuple[list[int] | None, int]:
    """(the axes the row-sum normaliser reduces, the key axis of A)."""
    rs = att.row_sum
    r = rank(rs.reduce.inputs[0]) or len(att.a.labels)
    return reduce_axes(rs.reduce, r), att.a.labels.index(att.m)


class Reassociate(Pass):
    name = "reassociate"
    summary = "(QKᵀ)V → Q(KᵀV) for softmax-free attention; causal → LinearAttention"

    def candidates(self, graph: gs.Graph):
        # a first product that contracts a dynamic axis is KᵀV, not QKᵀ
        return quadratic_candidates(graph, lambda att: isinstance(att.dim(att.d), int))

    def checks(self, match: Match, graph: gs.Graph, att: QuadraticAttention) -> None:
        scales, masks, causal, problems = _classify(att)
        match.bound = (att, scales, causal)
        if not match.check("softmax_free", "softmax" not in problems,
                           "a Softmax between the products does not commute with ·V" if "softmax" in problems
                           else f"{len(att.steps)} step(s) between the products, none a Softmax"):
            return
        if not match.check("steps_commute", not problems,
                           f"{', '.join(problems)} between the products does not commute with ·V" if problems
                           else "steps are scalar scales, causal masks or the row-sum normaliser"):
            return
        if att.row_sum is not None:
            axes, key = _row_sum_axes(att)
            if not match.check("row_sum_over_keys", axes == [key],
                               "the normaliser sums A over its key axis" if axes == [key] else
                               f"the normaliser sums A over axes {axes if axes is not None else 'computed at run time'}"
                               f"; its key axis is {key}"):
                return
        if causal:
            same_len = att.dim(att.n) == att.dim(att.m) and att.dim(att.n) is not None
            axes_ok = att.a.labels[-2:] == att.n + att.m
            ok = all(m for _, m in masks) and same_len and axes_ok
            why = ("the mask keeps j ≤ i over (query, key) axes of a square product" if ok else
                   "a mask that is not causal-triangular" if not all(m for _, m in masks) else
                   f"query and key lengths differ ({fmt(att.dim(att.n))} vs {fmt(att.dim(att.m))})" if not same_len
                   else "the triangle lies over axes other than (query, key)")
            if not match.check("mask_is_causal", ok, why):
                return
        if not check_scores_not_reused(match, att, () if att.row_sum is None else (att.row_sum.reduce,)):
            return
        ok, why = reassociation_gain(att.dim(att.n), att.dim(att.m), att.dim(att.d), att.dim(att.e))
        match.check("reassociation_saves_flops", ok, why)

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        att, scales, causal = match.bound
        emit = Emitter(graph, f"attnx_reassociate/{att.product.node.name}")
        q = att.q
        for step, s in scales:
            if (rank(s) or 0) > len(q.labels):
                s = emit.op("Reshape", s, emit.ints([]))
            q = type(q)(emit.op(step.op, q.tensor, s), q.labels)
        eps = None
        if att.row_sum is not None:
            eps = scalar_constant(att.row_sum.eps) if att.row_sum.eps is not None else attnx_node.EPS_WHEN_ABSENT
        moved = f"{len(scales)} scale(s) moved onto q" if scales else "no scale"
        norm = ("no normaliser" if eps is None else
                f"row sum → q·Σk (eps {eps:g}{', none in the graph' if att.row_sum.eps is None else ''})")
        if causal:
            fm, q_in, k_in = (("identity", q.tensor, att.k.tensor) if scales
                              else shared_feature_map(q.tensor, att.k.tensor))
            attrs = {"causal": True, "feature_map": fm, "normalize": eps is not None}
            if eps is not None:
                attrs["eps"] = eps
            what = attnx_node.emit_linear_attention(
                emit, q=type(q)(q_in, q.labels), k=type(q)(k_in, att.k.labels), v=att.v, batch=att.batch,
                n=att.n, m=att.m, d=att.d, e=att.e, out=att.output, out_labels=att.out_labels, attrs=attrs)
            return f"causal (QKᵀ)V → LinearAttention({what}); {moved}; {norm}"
        b = att.batch
        qc = emit.relabel(q.tensor, q.labels, b + att.n + att.d)
        kt = emit.relabel(att.k.tensor, att.k.labels, b + att.d + att.m)
        vc = emit.relabel(att.v.tensor, att.v.labels, b + att.m + att.e)
        y = emit.op("MatMul", qc, emit.op("MatMul", kt, vc))                     # [batch, n, e]
        if att.row_sum is not None:
            ksum = emit.op("ReduceSum", kt, emit.ints([-1]), attrs={"keepdims": 1})   # [batch, d, 1]
            den = emit.op("MatMul", qc, ksum)                                      # [batch, n, 1]
            if att.row_sum.eps is not None:
                den = emit.op("Add", den, att.row_sum.eps)
            y = emit.op("Div", y, den)
        take_over(att.output, emit.relabel(y, b + att.n + att.e, att.out_labels), emit)
        return f"(QKᵀ)V → Q(KᵀV) with MatMul; {moved}; {norm}"
