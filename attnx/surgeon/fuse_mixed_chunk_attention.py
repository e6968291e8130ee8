"""Fusion: FLASH's mixed chunk attention → attnx `MixedChunkAttention`.

Runs after fuse-relu-squared-attention, which has made the in-chunk quadratic part one
ReluSquaredAttention node over chunked tensors [B, C, g, S] (batch and chunk as its two batch
axes, the chunk of g as its token axis).
Pattern: Add(fold(quad), fold(lin)) where quad is that node's output, lin the across-chunk
part [B, C, g, E], and fold the same chain of layout steps (Reshape, Slice, Transpose, …) on
both sides: none in the paper's code, the fold back to [B, N, E] and the cut to n where the
sum is taken after it (lucidrains' FLASH-pytorch).
Checks:
  quad_in_chunks            the ReluSquaredAttention has norm none and rank-4 inputs with a
                            static token axis g (→ `chunk_size`); its scale → `quad_scale`, its
                            causal → `causal` (for g = 1, where the two agree, the across part decides)
  bias_same_in_every_chunk  when the ReluSquaredAttention has a bias [B|1, C|1, g|1, g|1] (a T5 bias
                            inside the chunk, a padded-key mask carried as one): it is computed from
                            lengths only, and evaluated at input lengths g+1, 3g and 3g+g/2 every
                            chunk's bias equals the first chunk's, a value <= -1e4 counting as masked
                            and equal to any other such (relu² is 0 there either way) → the op's
                            `bias`, the first chunk's [B|1, 1, g|1, g|1]; a bias 0 everywhere is
                            dropped. A later chunk may differ only by masking keys where v is the
                            model's zero padding (v a constant-0 Pad then layout steps, and 0 at
                            those keys when evaluated from a random unpadded v): relu² · 0 is 0
                            with or without the mask (FLASH-pytorch masks the keys it pads)
  same_fold_both_sides      the other Add input is the same layout chain, step by step (same op,
                            attributes, and extra inputs equal as constants or, at several
                            lengths, as shape computations)
  quad_not_reused           the quadratic output and the fold feed nothing else
  across_of_chunked_tensors graph walk: lin reaches graph inputs only through the chunked v,
                            two other chunked tensors shaped like quad_q (lin_q, lin_k), and
                            Shape nodes (lengths)
  across_is_linear_part     evaluated in ONNX Runtime on probes at 2, 3 and 4 chunks with
                            unpadded lengths that are not all whole chunks, lin equals the
                            spec reference's linear part (causal: exclusive prefix over earlier
                            chunks; not: all chunks) for one order of (lin_q, lin_k), times a
                            positive constant s, divided (or multiplied) by at most one scalar
                            length t read from shapes
Rewrite: the five chunked tensors reshaped to [B, 1, C·g, S] (v through a copy of its zero padding
when a padded-key mask was dropped, so the keys stay 0 whatever the guard feeds), lin_k divided (multiplied) by t
when there is one, the bias's first chunk (Slice of axis 1) when it is kept, one MixedChunkAttention (lin_scale s, or 0 when s is the spec's default), its output
reshaped to [B, C, g, E] and put through copies of the fold steps in place of the Add: the model's
own padding and unpadding stay as they were, every tensor but the sum keeps its value (the numeric
guard compares tensors by name), and Shape nodes that read the quadratic part or its fold steps
(TorchScript writes them) read the copies, which have the same shapes. FLASH without causality divides by the unpadded
n, not the op's padded N: that is the length t, read where the model reads it.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import torch

from attnx.ops import get_spec
from attnx.ops.mixed_chunk_attention import reference, scales
from attnx.surgeon.attnx_node import describe, emit_node, read_attributes
from attnx.surgeon.evaluate import evaluate_cut, shape_only, values_at_lengths
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, constant_value, is_scalar_shaped, producer, take_over
from attnx.surgeon.readers import other_input

SPEC = get_spec("MixedChunkAttention")
QUAD = get_spec("ReluSquaredAttention")
FOLD_OPS = {"Reshape", "Slice", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten"}
# (chunks, unpadded length as a function of g): a partial last chunk and a whole one, and
# lengths that differ, so a division by the unpadded n is told from one by N or by a constant
PROBES = ((2, lambda g: g + 1), (3, lambda g: 3 * g), (4, lambda g: 3 * g + max(g // 2, 1)))
PROBE_BATCH = 2
PROBE_FEATURES = 5  # v's feature axis in the probes when shape inference left it unknown
RTOL, ATOL = 1e-4, 1e-5
MASKED = -1e4  # a bias at or below this is a mask (docs/surgeon.md): relu(s·q·k + b)² is 0 there


def _readers(tensor: gs.Tensor) -> list[gs.Node]:
    """The nodes that read `tensor`'s values: Shape nodes read only its shape, which the fused node's
    output keeps (TorchScript exports read the shape of every tensor they reshape)."""
    return [n for n in tensor.outputs if n.op != "Shape"]


def _fold_chain(quad_out: gs.Tensor, graph: gs.Graph) -> tuple[list[gs.Node], gs.Node | None, gs.Tensor]:
    """(layout steps from quad_out, the Add they end in or None, the Add input they reach)."""
    chain, tensor = [], quad_out
    while len(_readers(tensor)) == 1 and all(tensor is not o for o in graph.outputs):
        node = _readers(tensor)[0]
        if node.op == "Add":
            return chain, node, tensor
        if node.op not in FOLD_OPS or node.inputs[0] is not tensor:
            break
        chain.append(node)
        tensor = node.outputs[0]
    return chain, None, tensor


def _same_input(a: gs.Tensor, b: gs.Tensor, graph: gs.Graph) -> bool:
    """a and b hold the same value: one tensor, equal constants, or equal shape computations."""
    if a is b:
        return True
    ca, cb = constant_value(a), constant_value(b)
    if ca is not None or cb is not None:
        return ca is not None and cb is not None and ca.shape == cb.shape and bool(np.all(ca == cb))
    if not (shape_only(a, graph) and shape_only(b, graph)):
        return False
    va, vb = values_at_lengths(graph, a, (1, 5, 37)), values_at_lengths(graph, b, (1, 5, 37))
    return va is not None and vb is not None and all(
        x.shape == y.shape and bool(np.all(x == y)) for x, y in zip(va, vb))


def _unfold(other: gs.Tensor, chain: list[gs.Node], graph: gs.Graph) -> gs.Tensor | None:
    """The tensor the same chain of steps turns into `other`; None when the steps differ."""
    tensor = other
    for step in reversed(chain):
        node = producer(tensor)
        if (node is None or node.op != step.op or node.attrs != step.attrs or len(node.inputs) != len(step.inputs)
                or not all(_same_input(a, b, graph) for a, b in zip(node.inputs[1:], step.inputs[1:]))):
            return None
        tensor = node.inputs[0]
    return tensor


def _across_leaves(lin: gs.Tensor, v: gs.Tensor, graph: gs.Graph):
    """(data leaves, lengths, ok) of lin: leaves are the largest pieces not computed from v,
    lengths the non-constant scalar shape computations; ok is False when a graph input is reached."""
    from_v: dict[int, bool] = {}

    def reads_v(t: gs.Tensor) -> bool:
        if id(t) not in from_v:
            node = producer(t)
            from_v[id(t)] = t is v or (node is not None and node.op != "Shape"
                                       and any(reads_v(i) for i in node.inputs))
        return from_v[id(t)]

    leaves, lengths, seen, stack = [], [], set(), [lin]
    while stack:
        t = stack.pop()
        if id(t) in seen or t is v or constant_value(t) is not None:
            continue
        seen.add(id(t))
        if shape_only(t, graph):
            if is_scalar_shaped(t) and t.dtype is not None and np.issubdtype(np.dtype(t.dtype), np.floating):
                lengths.append(t)
        elif not reads_v(t):
            leaves.append(t)
        elif producer(t) is None:
            return leaves, lengths, False
        else:
            stack.extend(producer(t).inputs)
    return leaves, lengths, True


def _computed_from(tensor: gs.Tensor, x: gs.Tensor) -> bool:
    """True when `x` is among the tensors `tensor` is computed from (through Shape nodes too)."""
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        if t is x:
            return True
        if id(t) not in seen:
            seen.add(id(t))
            stack.extend(producer(t).inputs if producer(t) is not None else [])
    return False


def _chunk_tail(t: gs.Tensor, rank: int = 4) -> list[int] | None:
    """[g, S] of a chunked [B, C, g, S] (rank 5: [B, H, C, g, S]) tensor when both are static; None otherwise."""
    if t.shape is None or len(t.shape) != rank or not all(isinstance(d, int) for d in t.shape[-2:]):
        return None
    return list(t.shape[-2:])


def _tail_fits(t: gs.Tensor, tail: list[int], rank: int = 4) -> bool:
    """t is [B, C, g, E] as far as shape inference knows: an axis it left unknown (TorchScript's Pad
    with negative pads loses them), or None in `tail`, is checked when the part is evaluated
    (`_fit_scale`)."""
    return (t.shape is not None and len(t.shape) == rank
            and all(not isinstance(d, int) or w is None or d == w for d, w in zip(t.shape[-2:], tail)))


def _linear_part(lq, lk, v, causal: bool, g: int) -> np.ndarray:
    """The spec reference's linear part with lin_scale 1 on chunked [B, C, g, S] (or [B, H, C, g, S])
    probes → [B, C, g, E] ([B, H, C, g, E])."""
    lead = v.shape[:-3] if v.ndim == 5 else (v.shape[0], 1)
    c = v.shape[-3]
    flat = [torch.from_numpy(x.reshape(*lead, c * g, x.shape[-1])) for x in (lq, lk, v)]
    zero = torch.zeros_like(flat[0])  # relu(0)² = 0: the quadratic part drops out
    (y,) = reference(zero, zero, *flat, causal=causal, chunk_size=g, quad_scale=1.0, lin_scale=1.0)
    return y.numpy().reshape(v.shape[:-1] + (y.shape[-1],))


def _fit_scale(got: list[np.ndarray], want: list[np.ndarray], t: list[float]) -> float | None:
    """The positive constant s with got = s/t · want at every probe (least squares, then checked); None if none."""
    if any(g.shape != w.shape for g, w in zip(got, want)):
        return None
    num = sum(float(np.vdot(g * ti, w)) for g, w, ti in zip(got, want, t))
    den = sum(float(np.vdot(w, w)) for w in want)
    if den == 0:
        return None
    s = num / den
    ok = all(np.allclose(g, s / ti * w, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(g).max())))
             for g, w, ti in zip(got, want, t))
    return s if ok and s > 0 else None


def _identify_across(graph, lin, leaves, v, lengths, causal: bool, g: int):
    """(lin_q, lin_k, (length tensor, power) or None, s) such that lin = s·t^-power · the reference's
    linear part (t^-1: the model divides by a length, t^+1: it multiplies by one, as by 1/n); None if none."""
    rng = np.random.default_rng(0)
    runs = []
    batch = v.shape[0] if isinstance(v.shape[0], int) else PROBE_BATCH  # a model exported at batch 1 keeps it
    for c, n_of in PROBES:
        # [B, (H,) C, g, S]: a head axis the model reshapes to has its static size; g, S as shape inference says
        shapes = [[batch, *(d if isinstance(d, int) else PROBE_BATCH for d in leaf.shape[1:-3]), c,
                   *(d if isinstance(d, int) else PROBE_FEATURES for d in leaf.shape[-2:])]
                  for leaf in (*leaves, v)]
        probes = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        got = evaluate_cut(graph, [*leaves, v], [lin, *lengths], probes, n_of(g), batch)
        if got is None:
            return None
        runs.append((probes, got))
    scalings = [(None, [1.0] * len(runs))]  # (length and power, its t at each probe)
    for li, length in enumerate(lengths):
        values = [float(out[1 + li].reshape(-1)[0]) for _, out in runs]
        if all(x > 0 for x in values):
            scalings += [((length, power), [x ** power for x in values]) for power in (1, -1)]
    for qi, ki in ((0, 1), (1, 0)):
        want = [_linear_part(p[qi], p[ki], p[2], causal, g) for p, _ in runs]
        for scaling, t in scalings:
            s = _fit_scale([out[0] for _, out in runs], want, t)
            if s is not None:
                return leaves[qi], leaves[ki], scaling, s
    return None


def _unmerged(x: gs.Tensor) -> gs.Tensor | None:
    """The tensor `layout.replace_qkv` merged `x` from (x a Reshape of it, after an Expand when it
    broadcast on a leading axis); None when x is no Reshape."""
    node = producer(x)
    if node is None or node.op != "Reshape":
        return None
    src = node.inputs[0]
    return producer(src).inputs[0] if producer(src) is not None and producer(src).op == "Expand" else src


def _merged_from(x: gs.Tensor) -> gs.Tensor | None:
    """The rank-5 tensor `x` [B·H, C, g, S] was merged from; None when x is not such a merge."""
    src = _unmerged(x) if x.shape is not None and len(x.shape) == 4 else None
    return src if src is not None and src.shape is not None and len(src.shape) == 5 else None


def _heads_view(quad: gs.Node, chain: list[gs.Node]):
    """FLASH with a head axis: fuse-relu-squared-attention ran the in-chunk part over [B·H, C, g, S], the
    leading axes of [B, H, C, g, S] merged, and reshaped its output back. Then (q, k, v and the bias as
    [B, H, C, g, ·] — the bias None when there is none or it is not such a merge —, the output back at
    rank 5, the fold steps after it); None when the node is not such a merge."""
    if not chain or chain[0].op != "Reshape":
        return None
    back = chain[0].outputs[0]
    sources = [_merged_from(x) for x in quad.inputs[:3]]
    if any(x is None for x in sources) or back.shape is None or len(back.shape) != 5:
        return None
    bias = None
    if len(quad.inputs) > 3 and quad.inputs[3].name:
        bias = _unmerged(quad.inputs[3])  # its rank may be unknown: _chunk_bias reads it by evaluation
        if bias is None:
            return None
    return (*sources, bias), back, chain[1:]


def _chunk_size(quad: gs.Node, attrs: dict) -> tuple[int | None, str]:
    """(g, why): the static chunk length of a ReluSquaredAttention over [B, C, g, S] with norm none
    and g within the spec's `chunk_size`; g None when it is not one."""
    shapes = [t.shape for t in quad.inputs[:3]]
    g = shapes[0][2] if shapes[0] is not None and len(shapes[0]) == 4 else None
    low, high = SPEC.attr("chunk_size").low, SPEC.attr("chunk_size").high
    if (attrs["norm"] == "none" and all(s is not None and len(s) == 4 for s in shapes)
            and isinstance(g, int) and low <= g <= high and all(s[2] == g for s in shapes)):
        return g, f"relu² attention over chunks of {g}"
    return None, (f"the ReluSquaredAttention has norm {attrs['norm']} and inputs "
                  f"{', '.join(str(s) for s in shapes)}: not norm none over [B, C, g, S] with a static g "
                  f"in {low:g}…{high:g}")


def _zero_padded(v: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(v0, steps) when the chunked `v` is v0 padded with zeros (a Pad of mode constant, value 0 or none,
    as F.pad exports) and then put through layout steps only (Reshape, Transpose, Cast, …); None otherwise.
    `steps` is the Pad then the layout steps, in graph order."""
    steps, t = [], v
    while (node := producer(t)) is not None:
        if node.op == "Pad":
            mode = node.attrs.get("mode", "constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            value = (constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name
                     else np.asarray(node.attrs.get("value", 0.0)))
            if mode != "constant" or value is None or np.any(value != 0):
                return None
            return node.inputs[0], [node, *reversed(steps)]
        if node.op not in FOLD_OPS | {"Cast"} or len(node.outputs) != 1 or not node.inputs:
            return None
        steps.append(node)
        t = node.inputs[0]
    return None


def _zero_keys(graph: gs.Graph, v0: gs.Tensor, v: gs.Tensor, n: int, seed: int) -> np.ndarray | None:
    """[C, g] booleans at input length n (batch 1): True where the chunked v ([B, (H,) C, g, E]), computed
    from a random v0, is 0 at every feature and head (the model's zero padding); None when it cannot run."""
    shape = evaluate_cut(graph, [], [v0], [], n, 1)
    if shape is None:
        return None
    probe = np.random.default_rng(seed).standard_normal(shape[0].shape).astype(np.float32)
    got = evaluate_cut(graph, [v0], [v], [probe], n, 1)
    if got is None or got[0].ndim not in (4, 5):
        return None
    return np.all(got[0] == 0, axis=tuple(range(got[0].ndim - 3)) + (got[0].ndim - 1,))


def _chunk_bias(graph: gs.Graph, bias: gs.Tensor, v: gs.Tensor, g: int, rank: int = 4):
    """(decision, what, padded): decision "keep" or "drop" when `bias` [B|1, C|1, g|1, g|1] is the same in
    every chunk (and "drop" when it is 0 everywhere), None (and why) when not. Rank 5: [B|1, H|1, C|1, g|1, g|1]. A chunk may differ from the
    first only by masking keys at which v is the model's zero padding (FLASH-pytorch masks the keys it pads):
    relu² times v is 0 there with or without the mask. `padded` is then `_zero_padded(v)`, which the
    rewrite copies so that those keys stay 0 whatever feeds the op; None when no such key was needed."""
    if not shape_only(bias, graph):
        return None, (f"the in-chunk bias {bias.name} depends on the inputs' values (a key mask given with the "
                      "input?): MixedChunkAttention's bias is one value per position pair inside the chunk"), None
    lengths = [g + 1, 3 * g, 3 * g + max(g // 2, 1)]
    values = values_at_lengths(graph, bias, lengths)
    if values is None:
        return None, f"the in-chunk bias {bias.name} could not be evaluated at input lengths {lengths}", None
    padding, used, zero = _zero_padded(v), False, True
    axis = rank - 3  # the chunks'
    for k, (n, b) in enumerate(zip(lengths, values)):
        if b.ndim != rank or any(d not in (1, g) for d in b.shape[-2:]):
            return None, (f"at input length {n} the in-chunk bias {bias.name} is {list(b.shape)}, not "
                          f"[B|1, {'H|1, ' if rank == 5 else ''}C|1, g|1, g|1] with g = {g}"), None
        zeros = None
        for c in range(b.shape[axis]):
            got, first = np.take(b, c, axis=axis), np.take(b, 0, axis=axis)
            masked = (got <= MASKED) & (first <= MASKED)
            same = masked | np.isclose(got, first, rtol=1e-6, atol=1e-6)
            if not same.all() and padding is not None:
                # the differing entries must mask keys where v is zero padding (the numeric guard then
                # runs the op on the model's own padding: the rewrite copies it)
                if zeros is None:
                    zeros = _zero_keys(graph, padding[0], v, n, seed=k)
                if zeros is not None and c < zeros.shape[0] and zeros.shape[1] == g:
                    keys = (zeros[c].reshape((1,) * (got.ndim - 1) + (g,)) if b.shape[-1] == g
                            else np.array(zeros[c].all()))
                    allowed = (got <= MASKED) & keys
                    used = used or bool(np.any(allowed & ~same))
                    same = same | allowed
            if not same.all():
                return None, (f"at input length {n} the in-chunk bias {bias.name} of chunk {c} differs from the "
                              f"first chunk's (by up to {float(np.abs(np.where(same, 0, got - first)).max()):.3g}) "
                              "at keys that are not the model's zero padding: not one bias per position pair "
                              "inside the chunk"), None
        zero = zero and bool(np.all(np.take(b, 0, axis=axis) == 0))
    padded = padding if used else None
    also = "" if padded is None else (f"; the later chunks' mask on keys where v is the model's zero padding "
                                      f"({padded[1][0].name}) is dropped: relu² · 0 is 0 with or without it")
    if zero:
        return "drop", f"its bias {bias.name} is 0 everywhere{also}: dropped", padded
    return "keep", (f"its bias {bias.name}, the same in every chunk (evaluated at input lengths "
                    f"{', '.join(map(str, lengths))}), as the op's in-chunk bias{also}"), padded


def _across_found(found, kind: str) -> str | None:
    """In words, what `_identify_across` found; None when it found nothing."""
    if found is None:
        return None
    lq, lk, length, s = found
    scaled = f"{s:.6g}" + ("" if length is None else f" {'/' if length[1] == 1 else '·'} {length[0].name}")
    return f"linear attention over {kind} (lin_q {lq.name}, lin_k {lk.name}, scaled by {scaled})"


class FuseMixedChunkAttention(Pass):
    name = "fuse-mixed-chunk-attention"
    summary = "ReluSquaredAttention in chunks + linear attention across chunks (FLASH) → MixedChunkAttention"

    def candidates(self, graph: gs.Graph):
        for node in graph.nodes:
            if node.op == QUAD.name and node.domain == QUAD.domain:
                chain, add, reached = _fold_chain(node.outputs[0], graph)
                if add is not None:  # no sum after the quadratic part: plain GAU attention
                    yield add.name, (node, chain, add, reached)

    def checks(self, match: Match, graph: gs.Graph, quad: gs.Node, chain, add: gs.Node, reached) -> None:
        attrs = read_attributes(QUAD, quad.attrs, quad.name)
        qq, qk, v = quad.inputs[:3]
        g, why = _chunk_size(quad, attrs)
        if not match.check("quad_in_chunks", g is not None, why):
            return
        bias = quad.inputs[3] if len(quad.inputs) > 3 and quad.inputs[3].name else None
        quad_out, rank, view = quad.outputs[0], 4, _heads_view(quad, chain)
        if view is not None:  # [B, H, C, g, S]: read at rank 5, the op takes the heads as its H
            (qq, qk, v, bias), quad_out, chain = view
            rank = 5
        keep_bias, why, padded = (("drop", "no bias on the in-chunk scores", None) if bias is None
                                  else _chunk_bias(graph, bias, v, g, rank))
        if not match.check("bias_same_in_every_chunk", keep_bias is not None, why):
            return
        bias = bias if keep_bias == "keep" else None
        lin = _unfold(other_input(add, reached), chain, graph)
        if not match.check("same_fold_both_sides", lin is not None,
                           f"{len(chain)} layout step(s) on both sides of the sum" if lin is not None else
                           f"the other side of {add.name} is not the same {len(chain)} layout step(s) "
                           f"({', '.join(n.op for n in chain) or 'none'}) applied to a tensor"):
            return
        kept = [quad.outputs[0], *([quad_out] if view is not None else []), *(n.outputs[0] for n in chain)]
        reused = [t.name for t in kept if len(_readers(t)) != 1]
        if not match.check("quad_not_reused", not reused,
                           f"{', '.join(reused)} also feed(s) other nodes" if reused
                           else "the quadratic part feeds only the sum"):
            return
        leaves, lengths, reached_input = _across_leaves(lin, v, graph)
        # a length read from the quadratic output's shape would feed the node that replaces it
        lengths = [t for t in lengths if not _computed_from(t, quad.outputs[0])]
        # v's E may be left unknown by shape inference (TorchScript's FLASH): g is what must be static; the
        # probes give such an axis PROBE_FEATURES, and the numeric guard runs the rewrite at real shapes
        # (and so may S, TorchScript's FLASH with rotary: both leaves then take PROBE_FEATURES)
        static = [_chunk_tail(t, rank) or ([g, None] if _tail_fits(t, [g, None], rank) else None) for t in (qq, v)]
        ok = (reached_input and len(leaves) == 2 and None not in static
              and all(t.shape is not None and len(t.shape) == rank and t.shape[-2] == g
                      and _tail_fits(t, static[0], rank) for t in leaves) and _tail_fits(lin, static[1], rank))
        layout = "[B, H, C, g, S]" if rank == 5 else "[B, C, g, S]"
        if not match.check("across_of_chunked_tensors", ok,
                           f"the across-chunk part reads v, {leaves[0].name}, {leaves[1].name} and lengths" if ok else
                           f"the across-chunk part {lin.name} does not read only the chunked v, two tensors shaped "
                           f"like quad_q {layout} (g static) and lengths "
                           f"(it reads {', '.join(t.name for t in leaves)})"):
            return
        causal = bool(attrs["causal"])
        found = _identify_across(graph, lin, leaves, v, lengths, causal, g)
        if found is None and g == 1:  # a 1×1 chunk is causal or not alike: the across part decides
            found = _identify_across(graph, lin, leaves, v, lengths, not causal, g)
            causal = causal if found is None else not causal
        kind = "earlier chunks (an exclusive prefix)" if causal else "all chunks"
        what = _across_found(found, kind)
        if not match.check("across_is_linear_part", found is not None,
                           what or f"evaluated on probes, {lin.name} is not the linear part of mixed chunk attention "
                           f"({kind}) times a constant over at most one length"):
            return
        lq, lk, length, s = found
        default = scales(1, causal=causal, chunk_size=g, quad_scale=0.0, lin_scale=0.0)[1] if causal else None
        lin_scale = 0.0 if length is None and default is not None and abs(s - default) <= 1e-6 * default else s
        with_bias = "" if bias is None else f" with the in-chunk bias {bias.name}"
        if padded is not None:
            with_bias += f" (its mask on the keys {padded[1][0].name} pads with zeros dropped)"
        heads = " (the head axis of [B, H, C, g, S] as the op's H)" if rank == 5 else ""
        match.bound = (f"relu² in chunks of {g}{heads}{with_bias} + {what}", quad_out, chain, add, reached,
                       (qq, qk, lq, lk, v), bias, padded, length, rank,
                       {"causal": causal, "chunk_size": g, "quad_scale": attrs["scale"], "lin_scale": lin_scale})

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        what, quad_out, chain, add, reached, (qq, qk, lq, lk, v), bias, padded, length, rank, attrs = match.bound
        emit = Emitter(graph, f"attnx_fuse_mixed_chunk/{add.name}")
        divided = ""
        if length is not None:  # the op's lin_scale is static: a length the model scales by goes into lin_k
            t, power = length
            op = "Div" if power == 1 else "Mul"
            divided = f" on lin_k {'/' if power == 1 else '·'} {t.name}"
            lk = emit.op(op, lk, t if t.dtype == lk.dtype else emit.op("CastLike", t, lk))
        if padded is not None:  # v's zero padding, copied: the op reads it from the unpadded v (see _chunk_bias)
            v0, steps = padded
            for step in steps:
                v0 = emit.op(step.op, v0, *step.inputs[1:], attrs=dict(step.attrs))
            v = v0
        # [B, C, g, S] → [B, 1, C·g, S]; [B, H, C, g, S] → [B, H, C·g, S]
        def target(x):  # Reshape's 0 copies the input's axis at the same index: [0, 0, -1, 0] would copy g
            if rank == 4:
                return emit.ints([0, 1, -1, 0])
            dims = emit.op("Shape", x)
            return emit.op("Concat", emit.op("Slice", dims, emit.ints([0]), emit.ints([2])), emit.ints([-1]),
                           emit.op("Slice", dims, emit.ints([4]), emit.ints([5])), attrs={"axis": 0})

        flat = [emit.op("Reshape", x, target(x)) for x in (qq, qk, lq, lk, v)]
        if bias is not None:  # the first chunk's: [B|1, C|1, g|1, g|1] → [B|1, 1, g|1, g|1] (H is 1), and
            # [B|1, H|1, C|1, g|1, g|1] → [B|1, H|1, g|1, g|1]
            first = emit.op("Slice", bias, emit.ints([0]), emit.ints([1]), emit.ints([rank - 3]))
            flat.append(first if rank == 4 else emit.op("Squeeze", first, emit.ints([2])))
        y, resolved = emit_node(emit, SPEC, flat, attrs, quad_out.dtype)
        # the sum gets the fused value through the model's own fold steps; every other tensor keeps
        # its meaning (the numeric guard compares them by name), so the quadratic part and the
        # chain it went through are dropped, and what read only their shapes reads the copies'
        now = {id(quad_out): emit.op("Reshape", y, emit.op("Shape", v))}
        for step in chain:
            now[id(step.outputs[0])] = emit.op(step.op, now[id(step.inputs[0])], *step.inputs[1:],
                                               attrs=dict(step.attrs))
        for tensor in [quad_out, *(step.outputs[0] for step in chain)]:
            for shape in [n for n in tensor.outputs if n.op == "Shape"]:
                take_over(shape.outputs[0], emit.op("Shape", now[id(tensor)], attrs=dict(shape.attrs)), emit)
        take_over(add.outputs[0], now[id(reached)], emit)
        return f"{what} → {SPEC.name}({describe(SPEC, resolved)}){divided}"
