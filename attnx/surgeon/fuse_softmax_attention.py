"""Fusion: softmax(s·Q·Kᵀ [+ mask])·V → ONNX Attention (opset 23).

Pattern: the quadratic attention pattern with a Softmax among its steps, followed only by
value-keeping steps (Cast to a float type, Identity, Dropout in inference: transformers writes them).
Checks:
  softmax_over_keys     the Softmax normalises over the key axis
  steps_scale_mask      before it only scales (Mul/Div by a constant or by a scalar computed from
                        input shapes, e.g. 1/√d from Shape) and at most one mask: Add of a 0/−inf
                        bias or Where(mask, scores, fill ≤ −1e4)
  mask_is_causal        a mask that depends on lengths only, evaluated at several lengths, keeps
                        everything (no mask) or j ≤ i over square (query, key) axes (→ is_causal=1)
  mask_before_scales    a mask computed from input values (a user attention_mask) comes after every
                        scale of the scores, as Attention adds attn_mask after scaling
  mask_fits_scores      such a mask has a known rank, at most the scores'
  scores_not_reused     the N×N intermediates feed nothing else (e.g. returned weights)
  kv_heads_repeat       k and v reach the products through the same repeat of KV heads, or none
                        (Llama's repeat_kv: Unsqueeze → Expand → Reshape), checked by evaluation
Scales applied to q or k before Q·Kᵀ (x·c, x/c, c a constant or a length-only scalar) fold into
`scale` too. Rewrite: Attention(q, k, v[, attn_mask]; scale = the product of the scales,
is_causal), in [B, H, N, D] with layouts restored; with repeated KV heads k and v are taken before
the repeat (Attention's grouped-query form). ONNX Runtime and TensorRT run Attention natively.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from attnx.surgeon.attention_pattern import (QuadraticAttention, check_scores_not_reused, quadratic_candidates,
                                             softmax_index, softmax_over_keys)
from attnx.surgeon.contraction import Operand
from attnx.surgeon.evaluate import evaluate_cut, values_at_lengths
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, constant_value, is_scalar_shaped, producer, rank
from attnx.surgeon.layout import replace_qkv
from attnx.surgeon.readers import ScoreMask, keeps_values, read_score_mask, scale_factor

ATTENTION_OPSET = 23
KV_PROBE_LENGTH, KV_PROBE_BATCH = 5, 2
SQUARE_PROBE_LENGTHS = (2, 7)


def _peel_scales(graph: gs.Graph, op: Operand) -> tuple[Operand, float]:
    """`op` before any scalar scales applied to it (x·c, c·x, x/c), and the product of those scales."""
    factor = 1.0
    for _ in range(4):
        node = producer(op.tensor)
        if node is None or node.op not in ("Mul", "Div") or len(node.inputs) != 2:
            break
        found = None
        for data in node.inputs[: 1 if node.op == "Div" else 2]:
            if not is_scalar_shaped(data) and rank(data) == len(op.labels):
                found = found or (data, scale_factor(graph, node, data))
        if found is None or found[1] is None:
            break
        factor *= found[1]
        op = Operand(found[0], op.labels)
    return op, factor


def _unsqueeze_axis(node: gs.Node) -> int | None:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        value = constant_value(node.inputs[1])
        axes = None if value is None else [int(a) for a in value.reshape(-1)]
    if axes is None or len(axes) != 1:
        return None
    return int(axes[0]) % (rank(node.inputs[0]) + 1) if rank(node.inputs[0]) is not None else None


def _skip_identity(tensor: gs.Tensor) -> gs.Node | None:
    node = producer(tensor)
    while node is not None and node.op == "Identity":
        node = producer(node.inputs[0])
    return node


@dataclasses.dataclass(frozen=True)
class KvRepeat:
    """k or v before a repeat of its heads axis: each head `rep` times in a row (repeat_interleave,
    transformers' repeat_kv) or the `rep` copies of all heads one after another (einops `(r h)`)."""

    operand: Operand
    rep: int
    tiled: bool
    heads: int  # after the repeat


def _kv_before_repeat(graph: gs.Graph, op: Operand, head: str) -> KvRepeat | str | None:
    """The operand before Reshape(Expand(Unsqueeze(x))) repeating its `head` axis, verified by evaluating
    it on a random x; None when there is no such structure; a reason when it is some other repeat."""
    reshape = _skip_identity(op.tensor)
    if reshape is None or reshape.op != "Reshape":
        return None
    expand = _skip_identity(reshape.inputs[0])
    if expand is None or expand.op != "Expand":
        return None
    unsqueeze = _skip_identity(expand.inputs[0])
    if unsqueeze is None or unsqueeze.op != "Unsqueeze":
        return None
    x, u = unsqueeze.inputs[0], _unsqueeze_axis(unsqueeze)
    if u is None or x.shape is None or len(x.shape) != len(op.labels):
        return None
    h = op.labels.index(head)
    if h not in (u - 1, u):
        return f"{reshape.name} repeats an axis of {x.name} next to axis {u}, not the heads axis {h}"
    length, batch = KV_PROBE_LENGTH, KV_PROBE_BATCH
    dims = [d if isinstance(d, int) else (batch if i == 0 else length) for i, d in enumerate(x.shape)]
    if not all(isinstance(d, int) for d in x.shape):  # the real shape at this length, by running to x
        actual = evaluate_cut(graph, [], [x], [], length, batch)
        dims = list(actual[0].shape) if actual is not None else dims
    probe = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    got = evaluate_cut(graph, [x], [op.tensor], [probe], length, batch)
    if got is None or got[0].ndim != probe.ndim or got[0].shape[h] % probe.shape[h]:
        return f"{reshape.name} on {x.name}: the repeat could not be evaluated"
    rep = got[0].shape[h] // probe.shape[h]
    if rep < 1 or got[0].shape[:h] + got[0].shape[h + 1:] != probe.shape[:h] + probe.shape[h + 1:]:
        return f"{reshape.name} on {x.name}: shape {list(probe.shape)} became {list(got[0].shape)}, not a repeat of the heads"
    tiled = h == u
    want = np.concatenate([probe] * rep, axis=h) if tiled else np.repeat(probe, rep, axis=h)
    if not np.array_equal(got[0], want):
        return f"{reshape.name} on {x.name}, evaluated, is not a repeat of the heads"
    return KvRepeat(Operand(x, op.labels), rep, tiled, int(got[0].shape[h]))


def _square(graph: gs.Graph, att: QuadraticAttention) -> bool:
    """Whether queries and keys have the same length at every input: equal by shape analysis, or the
    graph's inputs have one dynamic length (batch aside) and the scores, evaluated, are square."""
    if att.dim(att.n) is not None and att.dim(att.n) == att.dim(att.m):
        return True
    symbols = {d for t in graph.inputs for d in (t.shape or [])[1:] if not isinstance(d, int)}
    if len(symbols) > 1:
        return False
    labels = att.a.labels
    scores = values_at_lengths(graph, att.scores.output, SQUARE_PROBE_LENGTHS)
    return scores is not None and all(s.shape[labels.index(att.n)] == s.shape[labels.index(att.m)] == n
                                      for s, n in zip(scores, SQUARE_PROBE_LENGTHS))


class FuseSoftmaxAttention(Pass):
    name = "fuse-softmax-attention"
    summary = "softmax(s·QKᵀ [+ mask])·V → ONNX Attention (opset 23)"
    min_opset = ATTENTION_OPSET

    def candidates(self, graph: gs.Graph):
        # softmax-free attention is reassociation's
        return quadratic_candidates(graph, lambda att: softmax_index(att) is not None)

    def _scales_and_mask(self, match: Match, graph: gs.Graph, att: QuadraticAttention):
        """(scale, mask or None, whether a scale follows the mask) of the steps before the Softmax, or None
        with a failed check recorded."""
        scale, mask, other, scale_after_mask = 1.0, None, [], False
        for step, tensor in att.step_inputs()[:softmax_index(att)]:
            if keeps_values(step):
                continue
            if (factor := scale_factor(graph, step, tensor)) is not None:
                scale *= factor
                scale_after_mask = scale_after_mask or mask is not None
                if mask is not None and factor < 0:
                    other.append(f"{step.op} by {factor:g} after the mask")
                continue
            found = read_score_mask(graph, step, tensor, att.a.labels, att.n, att.m)
            if found is None or mask is not None or found.kind == "bad":
                other.append(f"{step.op} ({found.why})" if found is not None and found.kind == "bad" else
                             f"{step.op} (a second mask)" if found is not None else step.op)
                continue
            mask = (step, found)
        if not match.check("steps_scale_mask", not other,
                           f"{', '.join(other)} before the Softmax: neither a scale nor a 0/−inf mask"
                           if other else "only scales and at most one mask before the Softmax"):
            return None
        return scale, mask, scale_after_mask

    def checks(self, match: Match, graph: gs.Graph, att: QuadraticAttention) -> None:
        if not softmax_over_keys(match, att):
            return
        found = self._scales_and_mask(match, graph, att)
        if found is None:
            return
        scale, mask, scale_after_mask = found
        causal, attn_mask = False, None
        if mask is not None:
            step, read = mask
            if read.kind in ("none", "causal", "pattern"):
                square = _square(graph, att)
                ok = read.kind == "none" or read.kind == "causal" and square
                why = read.why if read.kind != "causal" or square else \
                    f"{read.why}, but queries ({att.dim(att.n)}) and keys ({att.dim(att.m)}) may differ in length"
                if not match.check("mask_is_causal", ok, why):
                    return
                causal = read.kind == "causal"
            else:
                r = rank(read.tensor)
                if not match.check("mask_fits_scores", r is not None and r <= len(att.a.labels),
                                   f"{read.why} of rank {r}, scores of rank {len(att.a.labels)}"):
                    return
                if not match.check("mask_before_scales", not scale_after_mask,
                                   f"{read.why}, scaled after it (Attention adds attn_mask after scaling)"
                                   if scale_after_mask else f"{read.why}, added after every scale → attn_mask"):
                    return
                attn_mask = (step, read)
        if not check_scores_not_reused(match, att):
            return
        q, q_scale = _peel_scales(graph, att.q)
        head_order = None
        k, k_scale = _peel_scales(graph, att.k)
        v = att.v
        if len(att.batch) == 2:
            reads = [_kv_before_repeat(graph, k, att.batch[-1]), _kv_before_repeat(graph, v, att.batch[-1])]
            problems = [r for r in reads if isinstance(r, str)]
            forms = [(r.rep, r.tiled, r.heads) if isinstance(r, KvRepeat) else (1, False, None) for r in reads]
            heads = forms[0][2]
            same = forms[0] == forms[1] and (forms[0][0] == 1 or isinstance(heads, int))
            if not match.check("kv_heads_repeat", not problems and same,
                               "; ".join(problems) if problems else
                               f"k and v repeat their heads differently ((repeats, tiled) {forms[0][:2]} vs "
                               f"{forms[1][:2]})" if not same else
                               f"KV heads repeated {forms[0][0]}× (grouped-query)" if forms[0][0] > 1 else
                               "no KV repeat"):
                return
            rep, tiled, _ = forms[0]
            if rep > 1:
                k, v = reads[0].operand, reads[1].operand
                if tiled:  # q head r·G + g uses KV head g; Attention's grouped form wants g·rep + r
                    groups = heads // rep
                    head_order = [r * groups + g for g in range(groups) for r in range(rep)]
        match.bound = (att, q, k, v, scale * q_scale * k_scale, causal, attn_mask, head_order)

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        att, q, k, v, scale, causal, attn_mask, head_order = match.bound
        emit = Emitter(graph, f"attnx_fuse_softmax/{att.product.node.name}")
        bias = None
        if attn_mask is not None:
            bias = Operand(_attn_mask(emit, att, attn_mask[1]), att.a.labels)
        replace_qkv(emit, "Attention", {"scale": float(scale), "is_causal": int(causal)}, q=q, k=k, v=v,
                    batch=att.batch, n=att.n, m=att.m, d=att.d, e=att.e, out=att.output, out_labels=att.out_labels,
                    bias=bias, head_order=head_order)
        what = f", attn_mask from {attn_mask[1].tensor.name}" if attn_mask is not None else ""
        if k is not att.k and producer(k.tensor) is not producer(att.k.tensor):
            what += f", KV heads before their repeat{' (q heads reordered)' if head_order else ''}"
        return f"softmax attention → Attention(scale={scale:g}, is_causal={int(causal)}{what})"


def _attn_mask(emit: Emitter, att: QuadraticAttention, read: ScoreMask) -> gs.Tensor:
    """Attention's attn_mask for a mask computed from input values: the additive float mask at the rank of
    the scores (axes `att.a.labels`); Where(keep, scores, fill) becomes Where(keep, 0, fill), which gives
    the same softmax wherever a row keeps a score."""
    mask = read.tensor
    dtype = np.dtype(att.q.tensor.dtype or np.float32)
    if not read.additive:
        zero, fill = np.zeros((), dtype), np.asarray(read.fill, dtype)
        mask = emit.op("Where", mask, zero, fill) if read.keep_true else emit.op("Where", mask, fill, zero)
        mask.dtype = dtype
    elif mask.dtype is not None and np.dtype(mask.dtype) != dtype:
        mask = emit.op("Cast", mask, attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(dtype)})
        mask.dtype = dtype
    r = rank(read.tensor)
    if r is not None and r < len(att.a.labels):
        mask = emit.op("Unsqueeze", mask, emit.ints(list(range(len(att.a.labels) - r))))
        mask.dtype = dtype
    return mask
