"""Fusion: softmax(s·QKᵀ masked to a structured key set)·V → attnx `SparseAttention`.

Pattern: the quadratic attention pattern whose steps end in a Softmax and hold one or more masks:
Where(mask, S, fill) / Where(mask, fill, S) (masked_fill, a bool mask) with fill ≤ −1e4
(−inf, −finfo(dtype).max, −1e9, …: exp underflows to exactly 0), or S + bias with a bias
whose values are 0 or ≤ −1e4. Several masks are read together (the keys every one keeps).
Bucketed local attention (scores [.., buckets, w, L·w], never N×N) is read by
`fuse_local_windows` instead: the sub-graph from q, k, v to the un-bucketed result is run at
several lengths and compared with SparseAttention's float64 reference (check
`windows_are_sparse_pattern`).
Checks:
  softmax_over_keys      the Softmax normalises over the key axis
  steps_scale_mask       besides the mask only constant scalar scales
  mask_from_lengths      the mask reaches graph inputs only through Shape nodes: its values
                         depend on the sequence length, never on the data
  square_over_query_key  one sequence length for queries and keys, the mask over (query, key)
  mask_not_plain_causal  evaluated at several lengths, the mask is not the causal triangle
                         j ≤ i, which is left to fuse-softmax-attention (ONNX Attention)
  mask_is_sparse_pattern evaluated at several lengths (`evaluate`), the mask equals one of
                         the spec's patterns (local, dilated, strided, block, causal or not)
  scores_not_reused      the N×N intermediates feed nothing else
Checks of the bucketed form (after softmax_over_keys):
  windows_from_qkv       the un-bucketed result reads q, k, v and lengths only (no input mask, no bias)
  windows_are_sparse_pattern  run at lengths 37, 1, 150 (batch 2), it equals SparseAttention's
                         reference for one local or block pattern within 1e-4 relative
Rewrite: SparseAttention(q, k, v; pattern and its parameters, scale) in [B, H, N, D].
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs
import torch

from attnx.ops import get_spec
from attnx.ops.sparse_attention import allowed
from attnx.surgeon.attention_pattern import (QuadraticAttention, check_scores_not_reused, find_quadratic,
                                             softmax_index, softmax_over_keys)
from attnx.surgeon.attnx_node import describe, emit_attention_node, onnx_attrs
from attnx.surgeon.contraction import Operand
from attnx.surgeon.evaluate import depends_only_on, shape_only, values_at_lengths
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.fuse_local_windows import find_windowed, identify_windowed
from attnx.surgeon.graph import Emitter
from attnx.surgeon.layout import replace_qkv
from attnx.surgeon.readers import constant_factor, other_input, where_mask
from attnx.surgeon.shapes import fmt

SPEC = get_spec("SparseAttention")
# what `allowed` takes besides a candidate's own parameters: the spec's defaults
PATTERN_DEFAULTS = {name: value for name, value in SPEC.resolve({}).items() if name != "scale"}
# lengths at which the mask is evaluated: long enough to tell every parameter below apart
EVAL_LENGTHS = (1, 5, 37, 150)
MAX_PARAM = 64
# a mask fill at or below this vanishes in softmax exactly as −inf does: exp(−1e4 + O(100))
# underflows to 0 in float32 and float64 (stated in the docs)
MASKED_AT = -1e4


def _candidates():
    for causal in (False, True):
        for w in range(1, MAX_PARAM + 1):
            yield {"pattern": "local", "window": w, "causal": causal}
        for b in range(2, MAX_PARAM + 1):
            yield {"pattern": "block", "block": b, "causal": causal}
        for w, r in itertools.product(range(1, 17), range(2, 9)):
            yield {"pattern": "dilated", "window": w, "dilation": r, "causal": causal}
        for w, t in itertools.product(range(1, 17), range(2, MAX_PARAM + 1)):
            if t > w + 1:
                yield {"pattern": "strided", "window": w, "stride": t, "causal": causal}


def identify_sparse(keeps: list[np.ndarray], lengths=EVAL_LENGTHS) -> dict | None:
    """The SparseAttention attributes whose `allowed` equals every boolean [n, n] mask; None if none does."""
    grids = [(torch.arange(n)[:, None], torch.arange(n)[None, :]) for n in lengths]
    wanted = [torch.from_numpy(k) for k in keeps]
    if bool(wanted[-1].all()):
        return None  # full attention is no sparse pattern
    for cand in _candidates():
        attrs = {**PATTERN_DEFAULTS, **cand}
        if all(torch.equal(allowed(i, j, **attrs), want) for (i, j), want in zip(grids, wanted)):
            return attrs
    return None


def _mask_of(step: gs.Node, data: gs.Tensor) -> tuple[gs.Tensor, str] | None:
    """(mask tensor, how to read it) for Where(m, S, -inf), Where(m, -inf, S) or S + bias."""
    if step.op == "Where":
        found = where_mask(step, data)
        if found is None or found[2] is None or found[2] > MASKED_AT:
            return None
        mask, keep_true, _ = found
        return mask, "keep_true" if keep_true else "keep_false"
    if step.op == "Add":
        bias = other_input(step, data)
        if bias.shape is not None and len(bias.shape) >= 2:
            return bias, "bias"
    return None


def _keep(value: np.ndarray, how: str) -> np.ndarray | None:
    value = np.asarray(value)
    while value.ndim > 2 and value.shape[0] == 1:
        value = value[0]
    if value.ndim != 2 or value.shape[0] != value.shape[1]:
        return None
    if how == "keep_true":
        return value.astype(bool)
    if how == "keep_false":
        return ~value.astype(bool)
    if not np.all((value == 0) | (value <= MASKED_AT)):
        return None  # a bias with other values is a position bias, not a mask
    return value == 0


def _masks(att: QuadraticAttention):
    """[(mask step, (mask, how))] of a softmax attention: every mask step; None when there is none."""
    if softmax_index(att) is None:
        return None
    masks = [(step, m) for step, tensor in att.step_inputs()[:softmax_index(att)]
             if (m := _mask_of(step, tensor)) is not None]
    return masks or None


def _step_scale(att: QuadraticAttention, skip=()) -> tuple[float, list[str]]:
    """(product of the constant scales among the steps before the Softmax, the ops of other steps)."""
    scale, other = 1.0, []
    for step, tensor in att.step_inputs()[:softmax_index(att)]:
        if any(step is s for s in skip):
            continue
        factor = constant_factor(step, tensor)
        if factor is None:
            other.append(step.op)
        else:
            scale *= factor
    return scale, other


def _is_causal(keeps: list[np.ndarray]) -> bool:
    return all(np.array_equal(k, np.tril(np.ones_like(k, dtype=bool))) for k in keeps)


class FuseSparseAttention(Pass):
    name = "fuse-sparse-attention"
    summary = "softmax(s·QKᵀ masked to a local/dilated/strided/block key set)·V → SparseAttention"

    def candidates(self, graph: gs.Graph):
        # unmasked softmax attention is fuse-softmax-attention's; a causal triangle is handed back with a reason
        for att in find_quadratic(graph):
            if softmax_index(att) is None:  # Cast, Identity or Dropout may follow the Softmax
                continue
            if isinstance(att.dim(att.n), int) and (win := find_windowed(graph, att)) is not None:
                yield att.product.node.name, (att, None, win)
            elif (masked := _masks(att)) is not None:
                yield att.product.node.name, (att, masked, None)

    def checks(self, match: Match, graph: gs.Graph, att: QuadraticAttention, masked, win) -> None:
        if not softmax_over_keys(match, att):
            return
        if win is not None:
            self._windowed_checks(match, graph, att, win)
            return
        scale, other = _step_scale(att, skip=[step for step, _ in masked])
        if not match.check("steps_scale_mask", not other,
                           f"{', '.join(other)} before the Softmax is neither a constant scale nor a mask"
                           if other else "constant scales and masks before the Softmax"):
            return
        mask_tensors = [mask for _, (mask, _) in masked]
        from_lengths = all(shape_only(mask, graph) for mask in mask_tensors)
        if not match.check("mask_from_lengths", from_lengths,
                           "the mask depends on the graph inputs' lengths only" if from_lengths else
                           "the mask depends on graph inputs' values, not only on their lengths"):
            return
        square = att.dim(att.n) == att.dim(att.m) and att.dim(att.n) is not None
        if not match.check("square_over_query_key", square and att.a.labels[-2:] == att.n + att.m,
                           f"queries {fmt(att.dim(att.n))} and keys {fmt(att.dim(att.m))}, mask over "
                           f"the last two axes of the scores"):
            return
        keeps = self._keeps(graph, masked)
        causal = keeps is not None and _is_causal(keeps)
        if not match.check("mask_not_plain_causal", not causal,
                           "the mask is the plain causal triangle j ≤ i at every length evaluated: left for "
                           "fuse-softmax-attention (ONNX Attention, is_causal)" if causal else
                           "the mask is not the plain causal triangle"):
            return
        attrs = None if keeps is None else identify_sparse(keeps)
        if not match.check("mask_is_sparse_pattern", attrs is not None,
                           f"a {attrs['pattern']} mask" if attrs else
                           "the mask, evaluated at several lengths, is none of local, dilated, strided, block"):
            return
        if not check_scores_not_reused(match, att):
            return
        match.bound = (att, None, {**attrs, "scale": scale})

    @staticmethod
    def _keeps(graph: gs.Graph, masked) -> list[np.ndarray] | None:
        """The keys every mask keeps, [n, n] bool at each of EVAL_LENGTHS; None when one cannot be read."""
        total = None
        for _, (mask, how) in masked:
            values = values_at_lengths(graph, mask, EVAL_LENGTHS)
            if values is None:
                return None
            keeps = [_keep(v, how) for v in values]
            if any(k is None for k in keeps):
                return None
            total = keeps if total is None else [a & b for a, b in zip(total, keeps)]
        return total

    def _windowed_checks(self, match: Match, graph: gs.Graph, att: QuadraticAttention, win) -> None:
        step_scale, _ = _step_scale(att)
        attrs, why = identify_windowed(graph, win, step_scale)
        only = win.out is not None and depends_only_on(win.out, [win.q, win.k, win.v], graph)
        if win.out is not None and not match.check(
                "windows_from_qkv", only,
                f"the bucketed attention from {win.q.name}, {win.k.name}, {win.v.name} to {win.out.name} "
                + ("reads nothing else but lengths" if only else
                   "also reads graph inputs' values (an input mask or bias)")):
            return
        if not match.check("windows_are_sparse_pattern", attrs is not None, why):
            return
        match.bound = (att, win, attrs)

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        att, win, attrs = match.bound
        emit = Emitter(graph, f"attnx_fuse_sparse/{att.product.node.name}")
        if win is None:
            what = emit_attention_node(emit, SPEC, att, attrs)
            return f"masked softmax attention → {SPEC.name}({what})"
        stored, resolved = onnx_attrs(SPEC, attrs)
        batch = "bh"[:len(win.q.shape) - 2]
        replace_qkv(emit, SPEC.name, stored, q=Operand(win.q, batch + "nd"), k=Operand(win.k, batch + "md"),
                    v=Operand(win.v, batch + "me"), batch=batch, n="n", m="m", d="d", e="e", out=win.out,
                    out_labels=batch + "ne", domain=SPEC.domain)
        return (f"bucketed local attention (buckets of {win.bucket} queries over {win.keys} keys) → "
                f"{SPEC.name}({describe(SPEC, resolved)})")
