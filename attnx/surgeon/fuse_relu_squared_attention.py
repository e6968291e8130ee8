"""Fusion: relu(s·QKᵀ [/L])² [/L] [causal]·V (GAU) → attnx `ReluSquaredAttention`.

Pattern: the quadratic attention pattern whose steps hold a Relu followed by a square
(Pow(·, 2), Mul(x, x) or Square).
Checks:
  relu_then_square     exactly one Relu, squared right after it (relu³, relu alone, square
                       then relu are other functions)
  no_row_sum           no row-sum normaliser (that is linear attention's)
  steps_scale_norm_mask  every other step is a constant positive scalar (→ `scale`), a
                       division by the key length read from a Shape (→ norm `n`), a causal
                       mask (Trilu, Where with 0 or -inf fill, Mul by a 0/1 lower triangle), or
                       one Add of a tensor before the Relu (→ `bias`, e.g. a relative-position bias)
  bias_broadcasts      the added tensor has at most the scores' rank and each axis 1 or the
                       scores' own; it comes before any length division or mask
  mask_is_causal       the mask keeps j ≤ i over the (query, key) axes of a square product
  scores_not_reused    the N×N intermediates feed nothing else
  fits_relu_squared    at most [B, H] batch axes
Mapping onto the spec: constant scalars before the Relu multiply `scale`; a constant c after
the square is norm `fixed` with `fixed_length` c when c is a whole number ≥ 1, else it folds
into `scale` as √(1/c) (relu(x)²·a = relu(√a·x)² for a > 0); a length division before the
Relu is `norm_placement=inside`, after it `outside`; no length is norm `none`. The op adds its
bias to s·qkᵀ, so constant factors between the Add and the Relu (and a √ of a factor folded from
after the square) multiply the bias too: the rewrite scales it with one Mul.
A per-row visible count (causal `visible`) is not matched: the report names the step.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from attnx.ops import get_spec
from attnx.surgeon.attention_pattern import QuadraticAttention, check_scores_not_reused, quadratic_candidates
from attnx.surgeon.attnx_node import emit_attention_node
from attnx.surgeon.contraction import Operand
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, scalar_constant
from attnx.surgeon.layout import fits
from attnx.surgeon.lengths import shape_axis
from attnx.surgeon.readers import NEG_INF_FILL, ZERO_FILL, causal_mask, constant_factor, other_input, scalar_operand
from attnx.surgeon.shapes import fmt

SPEC = get_spec("ReluSquaredAttention")


def _is_square(step: gs.Node, data: gs.Tensor) -> bool:
    if step.op == "Square":
        return True
    if step.op == "Pow":
        return step.inputs[0] is data and scalar_constant(step.inputs[1]) == 2.0
    return step.op == "Mul" and step.inputs[0] is data and step.inputs[1] is data


def _length_division(step: gs.Node, data: gs.Tensor):
    """The symbolic length L of data / L with L read from a shape; None otherwise."""
    s = scalar_operand(step, data) if step.op == "Div" else None
    return None if s is None else shape_axis(s)


def _bias_problem(other: gs.Tensor, data: gs.Tensor) -> str | None:
    """Why `data + other` is not scores plus a bias the op can broadcast; None when it is."""
    have, want = other.shape, data.shape
    if have is None or want is None:
        return f"the shapes of {other.name} ({have}) or of the scores ({want}) are unknown"
    aligned = list(want[len(want) - len(have):]) if have else []
    if len(have) > len(want) or any(h != 1 and h != w for h, w in zip(have, aligned)):
        return (f"{other.name} has shape {fmt(have)}; a bias needs at most the scores' rank and each "
                f"axis 1 or as in the scores' {fmt(want)}")
    return None


class FuseReluSquaredAttention(Pass):
    name = "fuse-relu-squared-attention"
    summary = "relu(s·QKᵀ [/L])² [/L] [causal]·V (GAU) → ReluSquaredAttention"

    def candidates(self, graph: gs.Graph):
        # no relu: softmax or linear attention, other passes' business
        return quadratic_candidates(graph, lambda att: any(s.op == "Relu" for s in att.steps))

    def checks(self, match: Match, graph: gs.Graph, att: QuadraticAttention) -> None:
        relus = [i for i, s in enumerate(att.steps) if s.op == "Relu"]
        squared = (len(relus) == 1 and relus[0] + 1 < len(att.steps)
                   and _is_square(att.steps[relus[0] + 1], att.steps[relus[0]].outputs[0]))
        powers = [s.op for s in att.steps[relus[0] + 2:] if s.op in ("Pow", "Square", "Relu")] if squared else []
        ok = squared and not powers
        if not match.check("relu_then_square", ok,
                           "relu(·)² between the products" if ok else
                           f"{len(relus)} Relu(s), not followed by exactly one square (e.g. relu³ or relu alone)"):
            return
        if not match.check("no_row_sum", att.row_sum is None,
                           "no row-sum normaliser" if att.row_sum is None
                           else "A is divided by its row sum: normalised attention, not GAU's"):
            return
        r = relus[0]
        scale, post, length, placement, causal, problems = 1.0, 1.0, None, None, None, []
        bias, bias_factor, bias_problem = None, 1.0, None
        for i, (step, tensor) in enumerate(att.step_inputs()):
            if i in (r, r + 1):
                continue
            before = i < r
            # a fill this negative before the Relu becomes 0 there, as 0 itself does
            fills = {ZERO_FILL, NEG_INF_FILL} if before else {ZERO_FILL}
            if (f := constant_factor(step, tensor)) is not None and f > 0:
                if before:
                    scale *= f
                    bias_factor *= f if bias is not None else 1.0
                else:
                    post *= f
            elif (dim := _length_division(step, tensor)) is not None and length is None:
                length, placement = dim, "inside" if before else "outside"
            elif (mask := causal_mask(step, tensor, fills)) is not None and causal is None:
                causal = mask
            elif step.op == "Add" and before and bias is None and tensor in step.inputs:
                bias = other_input(step, tensor)
                bias_problem = bias_problem or _bias_problem(bias, tensor)
                if length is not None or causal is not None:
                    bias_problem = bias_problem or "the bias is added after a length division or a mask"
            else:
                problems.append(step.op)
        if not match.check("steps_scale_norm_mask", not problems,
                           f"{', '.join(problems)} is neither a constant scale, a length division from a shape, "
                           f"a causal mask nor a bias before the Relu" if problems
                           else "constant scales, a length norm, a mask and a bias only"):
            return
        if bias is not None and not match.check("bias_broadcasts", bias_problem is None,
                                                bias_problem or f"{bias.name} added to the scores as the bias"):
            return
        if length is not None and not match.check(
                "length_is_key_count", length == att.dim(att.m),
                f"the division reads a length of {fmt(length)}; the keys number {fmt(att.dim(att.m))}"):
            return
        if causal is not None:
            same_len = att.dim(att.n) == att.dim(att.m) and att.dim(att.n) is not None
            ok = bool(causal) and same_len and att.a.labels[-2:] == att.n + att.m
            if not match.check("mask_is_causal", ok,
                               "the mask keeps j ≤ i over (query, key) of a square product" if ok
                               else "a mask that is not causal-triangular over (query, key)" if not causal
                               else "query and key lengths differ or the triangle is over other axes"):
                return
        if not check_scores_not_reused(match, att):
            return
        if not match.check("fits_relu_squared", *fits(att.batch, SPEC.name)):
            return
        attrs = {"causal": bool(causal), "norm": "none", "norm_placement": placement or "outside"}
        if length is not None:
            attrs["norm"] = "n"
        fixed = 1.0 / post
        if post != 1.0 and length is None and fixed >= 1 and abs(fixed - round(fixed)) < 1e-6 * fixed:
            attrs.update(norm="fixed", fixed_length=int(round(fixed)), norm_placement="outside")
        elif post != 1.0:
            scale *= math.sqrt(post)
            bias_factor *= math.sqrt(post)
        attrs["scale"] = scale
        match.bound = (att, attrs, bias, bias_factor)

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        att, attrs, bias, factor = match.bound
        emit = Emitter(graph, f"attnx_fuse_relu2/{att.product.node.name}")
        operand = None
        if bias is not None:
            labels, rank_ = att.a.labels, len(bias.shape)
            if factor != 1.0:
                bias = emit.op("Mul", bias, np.asarray(factor, dtype=bias.dtype))
            if rank_ < len(labels):
                bias = emit.op("Unsqueeze", bias, emit.ints(list(range(len(labels) - rank_))))
            operand = Operand(bias, labels)
        what = emit_attention_node(emit, SPEC, att, attrs, bias=operand)
        return f"relu² attention{' with a bias' if bias is not None else ''} → {SPEC.name}({what})"
