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
Mapping onto the spec: constant scalars before the Relu multiply `scale`; a constant c after
the square is norm `fixed` with `fixed_length` c when c is a whole number ≥ 1, else it folds
into `scale` as √(1/c) (relu(x)²·a = relu(√a·x)² for a > 0); a length division before the
Relu is `norm_placement=inside`, after it `outside`; no length is norm `none`. The op adds its
bias to s·qkᵀ, so constant factors between the Add and the Relu (and a √ of a factor folded from
after the square) multiply the bias too: the rewrite scales it with one Mul.
A per-row visible count (causal `visible`) is not matched: the report names the step.

Read by probing: when the spelling is not one read above (steps_scale_norm_mask, bias_broadcasts
on shapes inference left unnamed, or mask_is_causal fails; not when a bias provably comes after a
length division), the steps are run in ONNX Runtime from the scores S (and the one tensor b added
before the Relu) to A, at input lengths 5 and 37, batch 2 (`steps_read_by_probing`):
  - they must read nothing but S, b and lengths;
  - A = kept·relu(a·S + c·b)² for constants a > 0, c and a fixed 0/1 pattern `kept`, found from
    positive probes and then checked on random ones (1e-4 relative);
  - a and c at the two lengths: equal (norm none), or a·M and c·M equal (norm n inside) or a·√M
    and c·√M (outside), M the key count of the scores (queries and keys of one length);
  - kept is all keys or j ≤ i, possibly without whole keys (a key-padding mask, as FLASH's over
    its padded tail): then the steps' own mask tensors (Where conditions, Mul factors) must keep
    exactly that pattern, and they go into the bias as MASKED (−1e30) where a key is masked.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from attnx.ops import get_spec
from attnx.surgeon.attention_pattern import QuadraticAttention, check_scores_not_reused, quadratic_candidates
from attnx.surgeon.attnx_node import emit_attention_node
from attnx.surgeon.contraction import Operand
from attnx.surgeon.evaluate import _session, _zeros, depends_only_on, shape_only
from attnx.surgeon.framework import Check, Match, Pass
from attnx.surgeon.graph import Emitter, constant_value, is_scalar_shaped, scalar_constant
from attnx.surgeon.lengths import shape_axis
from attnx.surgeon.readers import (NEG_INF_FILL, ZERO_FILL, causal_mask, constant_factor, other_input,
                                   scalar_operand, where_mask)
from attnx.surgeon.shapes import fmt

SPEC = get_spec("ReluSquaredAttention")
AFTER_NORM = "the bias is added after a length division or a mask"
# checks whose failure means a spelling was not read (an unknown step, a shape not proved, a mask
# that is no triangle), not that it was read and refused: then the steps are read by probing
PROBE_WHEN = {"steps_scale_norm_mask", "bias_broadcasts", "mask_is_causal"}
# input lengths of the probe runs: a short one and one that is no multiple of any chunk up to 36
PROBE_LENGTHS = (5, 37)
PROBE_BATCH = 2
# a masked key's bias: relu(s·qkᵀ + b + MASKED) is 0 for any finite scores below 1e30
MASKED = -1e30
RTOL = 1e-4  # float32 evaluation of a few elementwise steps: ~1e-6 relative; a wrong scale or bias moves 1e-2


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


def _read_steps(match: Match, att: QuadraticAttention, r: int) -> gs.Tensor | None:
    """Read the steps by their spelling: record the checks on `match` and bind (att, attrs, bias,
    bias factor, bias rank) when they hold; returns the tensor added before the Relu (None if none)."""
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
                bias_problem = AFTER_NORM
        else:
            problems.append(step.op)
    if not match.check("steps_scale_norm_mask", not problems,
                       f"{', '.join(problems)} is neither a constant scale, a length division from a shape, "
                       f"a causal mask nor a bias before the Relu" if problems
                       else "constant scales, a length norm, a mask and a bias only"):
        return bias
    if bias is not None and not match.check("bias_broadcasts", bias_problem is None,
                                            bias_problem or f"{bias.name} added to the scores as the bias"):
        return bias
    if length is not None and not match.check(
            "length_is_key_count", length == att.dim(att.m),
            f"the division reads a length of {fmt(length)}; the keys number {fmt(att.dim(att.m))}"):
        return bias
    if causal is not None:
        same_len = att.dim(att.n) == att.dim(att.m) and att.dim(att.n) is not None
        ok = bool(causal) and same_len and att.a.labels[-2:] == att.n + att.m
        if not match.check("mask_is_causal", ok,
                           "the mask keeps j ≤ i over (query, key) of a square product" if ok
                           else "a mask that is not causal-triangular over (query, key)" if not causal
                           else "query and key lengths differ or the triangle is over other axes"):
            return bias
    if not check_scores_not_reused(match, att):
        return bias
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
    match.bound = (att, attrs, bias, bias_factor, None if bias is None else len(bias.shape), [], "")
    return bias


def _close(x: float, y: float) -> bool:
    return abs(x - y) <= RTOL * max(abs(x), abs(y))


class _Cut:
    """One ONNX Runtime session computing `outs` with `cuts` cut loose, run at any input length:
    the probes of one candidate share it (building a session copies the whole graph)."""

    def __init__(self, graph: gs.Graph, cuts: list[gs.Tensor], outs: list[gs.Tensor]):
        self.cuts = cuts
        try:
            self.model, self.session = _session(graph, outs, cuts)
        except Exception:  # onnx / onnxruntime's own error types: a subgraph that cannot run is no match
            self.session = None

    def __call__(self, probes: list[np.ndarray], n: int) -> list[np.ndarray] | None:
        if self.session is None:
            return None
        feeds = {x.name: p.astype(np.float32) for x, p in zip(self.cuts, probes)}
        feeds.update({i.name: _zeros(i, n, PROBE_BATCH) for i in self.model.graph.input[len(self.cuts):]})
        try:
            return [np.asarray(v) for v in self.session.run(None, feeds)]
        except Exception:  # onnxruntime's own error types
            return None


def _with_bias_variable(graph: gs.Graph, scores: gs.Tensor, bias: gs.Constant):
    """(a copy of graph where a constant bias reaches its readers through an Identity, [scores, that
    Identity's output] in the copy): a constant cannot be cut loose and set to probes (a dynamo
    export folds a bias over fixed-size chunks into one). The copy's tensors keep their names."""
    copy = graph.copy()
    tensors = copy.tensors()
    const = tensors[bias.name]
    var = gs.Variable(f"{bias.name}__probed", dtype=const.dtype, shape=list(const.shape))
    for node in list(const.outputs):
        for i in [i for i, t in enumerate(node.inputs) if t is const]:
            node.inputs[i] = var
    copy.layer(op="Identity", inputs=[const], outputs=[var])
    return copy, [tensors[scores.name], var]


def _float_inputs(graph: gs.Graph) -> list[gs.Tensor]:
    return [t for t in graph.inputs if t.dtype is not None and t.shape is not None
            and np.issubdtype(np.dtype(t.dtype), np.floating)]


def _random_inputs(inputs: list[gs.Tensor], n: int, rng) -> list[np.ndarray]:
    """Random N(0, 1) values for `inputs` at batch PROBE_BATCH, every dynamic axis n."""
    return [rng.standard_normal([d if isinstance(d, int) else (PROBE_BATCH if i == 0 else n)
                                 for i, d in enumerate(t.shape)]) for t in inputs]


def _probed_bias_problem(have: tuple, want: tuple) -> str | None:
    aligned = want[len(want) - len(have):] if have else ()
    if len(have) > len(want) or any(h != 1 and h != w for h, w in zip(have, aligned)):
        return (f"run, the bias is {list(have)} and the scores {list(want)}: a bias needs at most the scores' "
                f"rank and each axis 1 or as in the scores")
    return None


def _fit_at(real: _Cut, region: _Cut, inputs: list[gs.Tensor], has_bias: bool, n: int, rng):
    """(a, c, kept, s_shape, b_shape) with A = kept·relu(a·S + c·b)² at input length n (c 0 without
    a bias), kept the 0/1 pattern the steps keep; (None, why) when the steps compute no such A."""
    got = real(_random_inputs(inputs, n, rng), n)
    if got is None:
        return None, f"the graph does not run at input length {n}"
    s_shape, b_shape = got[0].shape, got[1].shape if has_bias else ()
    if has_bias and (problem := _probed_bias_problem(b_shape, s_shape)):
        return None, problem

    def run(s_val, b_val):
        out = region([s_val] + ([b_val] if has_bias else []), n)
        return None if out is None or out[0].shape != s_shape else out[0].astype(np.float64)

    p = rng.uniform(0.5, 1.5, s_shape)
    a1 = run(p, np.zeros(b_shape))
    if a1 is None:
        return None, f"the steps do not run on scores shaped {list(s_shape)}"
    kept = a1 != 0
    if not kept.any():
        return None, "the steps zero every positive score"
    a = math.sqrt(float(np.median(a1[kept] / p[kept] ** 2)))
    c = 0.0
    if has_bias:
        bp = rng.uniform(0.5, 1.5, b_shape)
        wide = np.broadcast_to(bp, s_shape)
        for sign in (1.0, -1.0):
            a2 = run(np.zeros(s_shape), sign * bp)
            if a2 is not None and (a2[kept] > 0).all():
                c = sign * math.sqrt(float(np.median(a2[kept] / wide[kept] ** 2)))
                break
    r, rb = rng.standard_normal(s_shape), rng.standard_normal(b_shape)
    got = run(r, rb)
    want = kept * np.maximum(a * r + c * np.broadcast_to(rb, s_shape), 0) ** 2
    scale = max(float(np.abs(want).max()), 1e-30)
    if got is None or float(np.abs(got - want).max()) > RTOL * scale:
        return None, ("the steps are not kept·relu(a·scores + c·bias)² for constants a, c and a fixed 0/1 "
                      f"pattern (at input length {n})")
    return (a, c, kept, s_shape, b_shape), ""


def _mask_reading(att, kept: np.ndarray) -> tuple[bool | None, bool, str]:
    """(causal, whole keys masked, why) for the 0/1 pattern `kept` over the scores' axes; causal None
    when the pattern is neither all keys nor j ≤ i, apart from whole keys (a key-padding mask)."""
    labels = att.a.labels
    kt = np.moveaxis(kept, [labels.index(att.n), labels.index(att.m)], [-2, -1])
    key = kt.any(axis=-2, keepdims=True)
    big_n, big_m = kt.shape[-2:]
    if np.array_equal(kt, np.broadcast_to(key, kt.shape)):
        causal = False
    elif big_n == big_m and np.array_equal(kt, np.tril(np.ones((big_n, big_m), bool)) & key):
        causal = True
    else:
        return None, False, "the steps keep a (query, key) pattern that is neither all keys nor j ≤ i"
    return causal, not key.all(), ""


def _mask_steps(att: QuadraticAttention) -> list[tuple[gs.Tensor, bool]]:
    """(mask tensor, keeps where nonzero) of every Where and every Mul by a non-scalar among the steps."""
    masks = []
    for step, data in att.step_inputs():
        if (found := where_mask(step, data)) is not None:
            masks.append((found[0], found[1]))
        elif step.op == "Mul" and not is_scalar_shaped(other := other_input(step, data)) \
                and constant_factor(step, data) is None:
            masks.append((other, True))
    return masks


def _keys_mask(graph, att, kept_at: list[np.ndarray]) -> tuple[list | None, str]:
    """(the mask steps as (tensor, keeps where nonzero, rank), why) when the steps' own mask tensors keep exactly the probed pattern at every
    probe length, so that they can go into the bias as −1e30 where masked; None otherwise."""
    masks = _mask_steps(att)
    if not masks or not all(shape_only(m, graph) for m, _ in masks):
        return None, "the steps mask whole keys, and the masks are not tensors read from lengths only"
    computed = [m for m, _ in masks if constant_value(m) is None]
    run = _Cut(graph, [], computed)
    for n, kept in zip(PROBE_LENGTHS, kept_at):
        values = run([], n) if computed else []
        got = None if values is None else [constant_value(m) if constant_value(m) is not None else values.pop(0)
                                           for m, _ in masks]
        if got is None:
            return None, f"the masks of the steps do not run at input length {n}"
        keep = np.ones((), bool)
        try:
            for value, (_, when_nonzero) in zip(got, masks):
                keep = keep & ((value != 0) if when_nonzero else (value == 0))
            same = np.array_equal(np.broadcast_to(keep, kept.shape), kept)
        except ValueError:
            same = False
        if not same:
            return None, "the steps' mask tensors do not keep the pattern the steps keep"
    return [(m, when_nonzero, value.ndim) for (m, when_nonzero), value in zip(masks, got)], ""


def _read_by_probing(graph: gs.Graph, att: QuadraticAttention, bias: gs.Tensor | None):
    """(bound, why) read by running the steps on probes at PROBE_LENGTHS; (None, why) when they are
    not relu(s·qkᵀ + f·bias)² [/L] with L the key count, over all keys or j ≤ i."""
    cuts = [att.scores.output] + ([bias] if bias is not None else [])
    if not depends_only_on(att.a.tensor, cuts, graph):
        return None, "probing: the steps read data other than the scores and one bias"
    reused = att.reused_intermediates()
    if reused:
        return None, f"probing: {', '.join(reused)} also feed(s) other nodes"
    rng = np.random.default_rng(0)
    inputs = _float_inputs(graph)
    probed, cuts = _with_bias_variable(graph, att.scores.output, bias) if isinstance(bias, gs.Constant) else (graph, cuts)
    real, region = _Cut(probed, inputs, cuts), _Cut(probed, cuts, [att.a.tensor])
    fitted, masked_keys, causal, kept_at = [], False, None, []
    for n in PROBE_LENGTHS:
        fit, why = _fit_at(real, region, inputs, bias is not None, n, rng)
        if fit is None:
            return None, f"probing: {why}"
        a, c, kept, s_shape, b_shape = fit
        mask, whole_keys, why = _mask_reading(att, kept)
        if mask is None or causal not in (None, mask):
            return None, f"probing: {why or 'the mask is causal at one length and not at another'}"
        causal, masked_keys = mask, masked_keys or whole_keys
        kept_at.append(kept)
        fitted.append((a, c, s_shape[att.a.labels.index(att.m)], b_shape))
    (a1, c1, m1, b1), (a2, c2, m2, _) = fitted
    norms = [("none", "outside", 1.0, 1.0)]
    if m1 != m2:  # a scale that follows the key count is a length norm, inside or outside the square
        norms += [("n", "inside", m1, m2), ("n", "outside", math.sqrt(m1), math.sqrt(m2))]
    found = [(norm, placement, l1) for norm, placement, l1, l2 in norms
             if _close(a1 * l1, a2 * l2) and (bias is None or _close(c1 * l1, c2 * l2))]
    if not found:
        return None, ("probing: the factors on the scores and the bias change with the length as no norm of the "
                      f"op does (keys {m1}, {m2}; factors {a1:.6g}, {a2:.6g} and {c1:.6g}, {c2:.6g})")
    norm, placement, l1 = found[0]
    if norm == "n" and None not in (att.dim(att.n), att.dim(att.m)) and att.dim(att.n) != att.dim(att.m):
        return None, "probing: the scale follows a length, and queries and keys may differ in length"
    masks = []
    if masked_keys:
        masks, why = _keys_mask(graph, att, kept_at)
        if masks is None:
            return None, f"probing: {why}"
    attrs = {"causal": causal, "norm": norm, "norm_placement": placement, "scale": a1 * l1}
    what = (f"probed at input lengths {', '.join(map(str, PROBE_LENGTHS))}: relu({a1 * l1:.6g}·qkᵀ"
            + (f" + {c1 * l1:.6g}·{bias.name}" if bias is not None else "") + ")²"
            + ({"inside": " with /n inside", "outside": " /n"}[placement] if norm == "n" else "")
            + (", j ≤ i" if causal else "")
            + (f", keys masked by {', '.join(m[0].name for m in masks)} (into the bias as {MASKED:g})"
               if masks else ""))
    return (att, attrs, bias, c1 * l1, len(b1) if bias is not None else None, masks, what), what


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
        read = Match(match.anchor, None)
        bias = _read_steps(read, att, relus[0])
        failed = read.failed()
        if failed is not None and failed.name in PROBE_WHEN and failed.why != AFTER_NORM:
            # the steps' spelling is not one we read: read what they compute by running them
            found, why = _read_by_probing(graph, att, bias)
            if found is not None:
                match.check("steps_read_by_probing", True, why)
                match.bound = found
                return
            match.checks.append(Check(failed.name, False, f"{failed.why}; {why}"))
            return
        match.checks.extend(read.checks)
        if failed is None:
            match.bound = read.bound

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        att, attrs, bias, factor, rank_, masks, probed = match.bound
        emit = Emitter(graph, f"attnx_fuse_relu2/{att.product.node.name}")
        operand, labels = None, att.a.labels
        if bias is not None and factor != 1.0:
            bias = emit.op("Mul", bias, np.asarray(factor, dtype=bias.dtype or np.float32))
        if masks:  # a key mask the op cannot take goes into the bias: MASKED where a key is masked
            keep = None
            for mask, when_nonzero, _ in masks:
                step = emit.op("Cast", mask, attrs={"to": onnx.TensorProto.BOOL})
                step = step if when_nonzero else emit.op("Not", step)
                keep = step if keep is None else emit.op("And", keep, step)
            dtype = att.scores.output.dtype or np.float32
            masked = emit.op("Where", keep, np.zeros((), dtype), np.asarray(MASKED, dtype))
            bias = masked if bias is None else emit.op("Add", bias, masked)
            rank_ = max([rank_ or 0] + [mask_rank for _, _, mask_rank in masks])
        if bias is not None:
            if rank_ < len(labels):
                bias = emit.op("Unsqueeze", bias, emit.ints(list(range(len(labels) - rank_))))
            operand = Operand(bias, labels)
        what = emit_attention_node(emit, SPEC, att, attrs, bias=operand)
        merged = (f" ({len(att.batch)} batch axes: the first {len(att.batch) - 1} merged into one)"
                  if len(att.batch) > 2 else "")
        return (f"relu² attention{' with a bias' if bias is not None else ''}"
                f"{' and a key mask' if masks else ''} → {SPEC.name}({what}){merged}"
                + (f" ({probed})" if probed else ""))
