"""Fusion: softmax(s·QKᵀ masked to a structured key set)·V → attnx `SparseAttention`.

Pattern: the quadratic attention pattern whose steps end in a Softmax and hold one mask:
Where(mask, S, -inf) (masked_fill) or S + bias with a 0/-inf bias.
Checks:
  softmax_over_keys      the Softmax normalises over the key axis
  steps_scale_mask       besides the mask only constant scalar scales
  mask_from_lengths      the mask reaches graph inputs only through Shape nodes: its values
                         depend on the sequence length, never on the data
  square_over_query_key  one sequence length for queries and keys, the mask over (query, key)
  mask_is_sparse_pattern evaluated at several lengths (`evaluate`), the mask equals one of
                         the spec's patterns (local, dilated, strided, block, causal or not);
                         a plain causal triangle is left to fuse-softmax-attention
  scores_not_reused      the N×N intermediates feed nothing else
  fits_sparse_attention  at most [B, H] batch axes
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
                                             softmax_over_keys)
from attnx.surgeon.attnx_node import emit_attention_node
from attnx.surgeon.evaluate import shape_only, values_at_lengths
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter
from attnx.surgeon.layout import fits
from attnx.surgeon.readers import (MASK_FILL_MAX, NEG_INF_FILL, constant_factor, fill_kind, other_input, triangle,
                                   where_mask)
from attnx.surgeon.shapes import fmt

SPEC = get_spec("SparseAttention")
# what `allowed` takes besides a candidate's own parameters: the spec's defaults
PATTERN_DEFAULTS = {name: value for name, value in SPEC.resolve({}).items() if name != "scale"}
# lengths at which the mask is evaluated: long enough to tell every parameter below apart
EVAL_LENGTHS = (1, 5, 37, 150)
MAX_PARAM = 64


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
        if found is None or fill_kind(found[2]) != NEG_INF_FILL:
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
    if not np.all((value == 0) | (value <= MASK_FILL_MAX)):
        return None  # a bias with other values is a position bias, not a mask
    return value == 0


def _one_mask(att: QuadraticAttention):
    """(mask step, (mask, how)) of a softmax attention with exactly one mask, not a causal triangle; else None."""
    if not att.steps or att.steps[-1].op != "Softmax":
        return None
    masks = [(step, m) for step, tensor in att.step_inputs()[:-1] if (m := _mask_of(step, tensor)) is not None]
    if len(masks) != 1 or triangle(masks[0][1][0]) is not None:
        return None
    return masks[0]


class FuseSparseAttention(Pass):
    name = "fuse-sparse-attention"
    summary = "softmax(s·QKᵀ masked to a local/dilated/strided/block key set)·V → SparseAttention"

    def candidates(self, graph: gs.Graph):
        # unmasked, several masks, or a causal triangle: fuse-softmax-attention's
        for att in find_quadratic(graph):
            if (masked := _one_mask(att)) is not None:
                yield att.product.node.name, (att, masked)

    def checks(self, match: Match, graph: gs.Graph, att: QuadraticAttention, masked) -> None:
        if not softmax_over_keys(match, att):
            return
        mask_step, (mask, how) = masked
        scale, other = 1.0, []
        for step, tensor in att.step_inputs()[:-1]:
            if step is not mask_step:
                factor = constant_factor(step, tensor)
                if factor is None:
                    other.append(step.op)
                else:
                    scale *= factor
        if not match.check("steps_scale_mask", not other,
                           f"{', '.join(other)} before the Softmax is neither a constant scale nor the mask"
                           if other else "constant scales and one mask before the Softmax"):
            return
        from_lengths = shape_only(mask, graph)
        if not match.check("mask_from_lengths", from_lengths,
                           "the mask depends on the graph inputs' lengths only" if from_lengths else
                           "the mask depends on graph inputs' values, not only on their lengths"):
            return
        square = att.dim(att.n) == att.dim(att.m) and att.dim(att.n) is not None
        if not match.check("square_over_query_key", square and att.a.labels[-2:] == att.n + att.m,
                           f"queries {fmt(att.dim(att.n))} and keys {fmt(att.dim(att.m))}, mask over "
                           f"the last two axes of the scores"):
            return
        values = values_at_lengths(graph, mask, EVAL_LENGTHS)
        keeps = None if values is None else [_keep(v, how) for v in values]
        attrs = None if keeps is None or any(k is None for k in keeps) else identify_sparse(keeps)
        if not match.check("mask_is_sparse_pattern", attrs is not None,
                           f"a {attrs['pattern']} mask" if attrs else
                           "the mask, evaluated at several lengths, is none of local, dilated, strided, block "
                           "(a plain causal triangle is fuse-softmax-attention's)"):
            return
        if not check_scores_not_reused(match, att):
            return
        if not match.check("fits_sparse_attention", *fits(att.batch, SPEC.name)):
            return
        match.bound = (att, {**attrs, "scale": scale})

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        att, attrs = match.bound
        what = emit_attention_node(Emitter(graph, f"attnx_fuse_sparse/{att.product.node.name}"), SPEC, att, attrs)
        return f"masked softmax attention → {SPEC.name}({what})"
