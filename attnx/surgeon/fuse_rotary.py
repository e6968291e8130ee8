"""Fusion: x·cos + rot(x)·sin (RoPE) → ONNX `RotaryEmbedding` (opset 23).

Pattern: Add(Mul(x, cos), Mul(r, sin)) where r is computed from x alone (rotate-half,
interleaved, through Slice, Split, Gather, Reshape or einops-style spellings).
Checks:
  rotation_of_x           r, evaluated on a probe x, equals rotate_half(x) = [−x₂, x₁] (halves)
                          or the interleaved rotation [−x₁, x₀, −x₃, x₂, …]
  cos_sin_from_lengths    cos and sin reach graph inputs only through Shape nodes (positions
                          0…n−1 computed in the graph, or a constant table sliced to n)
  caches_repeat_halves    evaluated at several lengths, cos and sin are [n, D] tables whose two
                          halves (rotate-half) or even/odd columns (interleaved) agree, indexed
                          by the token axis of x
  fits_rotary_embedding   x is [B, H, N, D], [B, N, H, D] or [B, N, D]
  opset_supports_op       the model's opset is ≥ 23 (else reported, not rewritten)
Rewrite: RotaryEmbedding(x in [B, H, N, D], cos_cache = the half table [n, D/2], sin_cache,
position_ids = 0…n−1 per batch row, interleaved); layouts restored. A partial rotation,
cat(rope(t[..., :rd]), t[..., rd:]), becomes RotaryEmbedding(t, rotary_embedding_dim=rd).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, constant_value, producer, take_over
from attnx.surgeon.evaluate import depends_only_on, evaluate_from, probe_for, shape_only, values_at_lengths

ROTARY_OPSET = 23
EVAL_LENGTHS = (5, 37)
ANCESTRY_DEPTH = 12


def rotate_half(x: np.ndarray) -> np.ndarray:
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate([-x2, x1], axis=-1)


def rotate_interleaved(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = -x[..., 1::2], x[..., 0::2]
    return out


def _descends_from(tensor: gs.Tensor, ancestor: gs.Tensor) -> bool:
    frontier = [tensor]
    for _ in range(ANCESTRY_DEPTH):
        nxt = []
        for t in frontier:
            if t is ancestor:
                return True
            node = producer(t)
            if node is not None and node.op != "Shape":
                nxt.extend(node.inputs)
        frontier = nxt
    return False


def _rope_terms(add: gs.Node):
    """(x, cos, r, sin) for add = x·cos + r·sin with r computed from x (either product first,
    either factor of each); None otherwise."""
    muls = [producer(t) for t in add.inputs]
    if any(m is None or m.op != "Mul" for m in muls):
        return None
    for first, second in ((muls[0], muls[1]), (muls[1], muls[0])):
        for x, cos in ((first.inputs[0], first.inputs[1]), (first.inputs[1], first.inputs[0])):
            for r, sin in ((second.inputs[0], second.inputs[1]), (second.inputs[1], second.inputs[0])):
                if r is not x and _descends_from(r, x):
                    return x, cos, r, sin
    return None


def _rotation(graph: gs.Graph, x: gs.Tensor, r: gs.Tensor) -> str | None:
    """'half', 'interleaved' or None: r evaluated as a function of x alone on a probe input.

    Shapes the rotation reads from other tensors (a Reshape to [..., D/2, 2]) come from graph
    inputs fed with zeros, every symbolic axis at the probe's size.
    """
    if x.shape is None or not isinstance(x.shape[-1], int) or x.shape[-1] % 2 or not depends_only_on(r, x, graph):
        return None
    probe = probe_for(x)
    got = evaluate_from(graph, x, r, probe)
    for name, fn in (("half", rotate_half), ("interleaved", rotate_interleaved)):
        if got is not None and got.shape == probe.shape and np.array_equal(got, fn(probe)):
            return name
    return None


def _last_axis_slice(tensor: gs.Tensor) -> tuple[gs.Tensor, int, int] | None:
    """(source, start, end) when tensor = source[..., start:end] (step 1 on the last axis)."""
    node = producer(tensor)
    if node is None or node.op != "Slice" or node.inputs[0].shape is None:
        return None
    values = [constant_value(t) if i < len(node.inputs) and node.inputs[i].name else None
              for i, t in enumerate(node.inputs[1:5], start=1)]
    r = len(node.inputs[0].shape)
    starts, ends = values[0], values[1]
    axes = values[2] if len(values) > 2 and values[2] is not None else np.arange(r)
    steps = values[3] if len(values) > 3 and values[3] is not None else np.ones(1)
    if starts is None or ends is None or starts.size != 1 or [int(a) % r for a in axes.reshape(-1)] != [r - 1] \
            or int(steps.reshape(-1)[0]) != 1 or not isinstance(node.inputs[0].shape[-1], int):
        return None
    d = node.inputs[0].shape[-1]
    return node.inputs[0], int(starts.reshape(())), min(int(ends.reshape(())), d)


def _partial(add: gs.Node, x: gs.Tensor):
    """(t, rotary dim, Concat) for cat(rope(t[..., :rd]), t[..., rd:]): a partial rotation of t."""
    head = _last_axis_slice(x)
    out = add.outputs[0]
    if head is None or head[1] != 0 or len(out.outputs) != 1 or out.outputs[0].op != "Concat":
        return None
    t, _, rd = head
    concat = out.outputs[0]
    tail = _last_axis_slice(concat.inputs[1]) if len(concat.inputs) == 2 and concat.inputs[0] is out else None
    axis = int(concat.attrs.get("axis", -1)) % len(t.shape)
    if tail is None or tail[0] is not t or tail[1] != rd or tail[2] != t.shape[-1] or axis != len(t.shape) - 1:
        return None
    return t, rd, concat


def _table(value: np.ndarray, n: int, d: int) -> tuple[np.ndarray, int] | None:
    """([n, d] table, token axis counted from the end) for a cos/sin value broadcast against x."""
    while value.ndim > 2 and value.shape[0] == 1:
        value = value[0]
    trailing = 0
    while value.ndim > 2 and value.shape[-2] == 1:
        value, trailing = value[..., 0, :], trailing + 1
    if value.shape != (n, d):
        return None
    return value, -(2 + trailing)


def _halves_agree(table: np.ndarray, kind: str) -> bool:
    if kind == "half":
        a, b = np.split(table, 2, axis=-1)
    else:
        a, b = table[..., 0::2], table[..., 1::2]
    return np.array_equal(a, b)


class FuseRotary(Pass):
    name = "fuse-rotary"
    summary = "x·cos + rotate(x)·sin → ONNX RotaryEmbedding (opset 23)"
    min_opset = ROTARY_OPSET

    def candidates(self, graph: gs.Graph):
        for node in graph.nodes:
            if node.op == "Add" and (found := _rope_terms(node)) is not None:
                yield node.name, (node, *found)

    def checks(self, match: Match, graph: gs.Graph, add: gs.Node, x, cos, r, sin) -> None:
        kind = _rotation(graph, x, r)
        if not match.check("rotation_of_x", kind is not None,
                           f"{kind} rotation of x" if kind else
                           "the term multiplied by sin is not rotate-half or the interleaved rotation of x"):
            return
        tables = shape_only(cos, graph) and shape_only(sin, graph)
        if not match.check("cos_sin_from_lengths", tables,
                           "cos and sin depend on the graph inputs' lengths only" if tables else
                           "cos and sin depend on graph inputs' values (e.g. position ids); not a fixed table"):
            return
        d = x.shape[-1]
        tables = []
        for t in (cos, sin):
            values = values_at_lengths(graph, t, EVAL_LENGTHS)
            tables.append(None if values is None else [_table(v, n, d) for v, n in zip(values, EVAL_LENGTHS)])
        ok = all(ts is not None and all(t is not None for t in ts) for ts in tables)
        axes = {t[1] for ts in tables if ts for t in ts if t is not None}
        ok = ok and len(axes) == 1 and all(_halves_agree(t[0], kind) for ts in tables for t in ts)
        if not match.check("caches_repeat_halves", ok,
                           f"cos and sin are [n, {d}] tables repeating their {kind} halves" if ok else
                           f"cos and sin are not [n, {d}] tables over the token axis whose {kind} halves agree"):
            return
        (axis,) = axes
        r_x = len(x.shape)
        layout = {(4, -2): "bhnd", (4, -3): "bnhd", (3, -2): "bnd"}.get((r_x, axis))
        if not match.check("fits_rotary_embedding", layout is not None,
                           f"x is [{layout}]" if layout else f"x of rank {r_x} with tokens on axis {axis}"):
            return
        match.bound = (add, x, cos, sin, kind, layout, _partial(add, x))

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        add, x, cos, sin, kind, layout, partial = match.bound
        emit = Emitter(graph, f"attnx_fuse_rotary/{add.name}")
        d = x.shape[-1]
        attrs = {"interleaved": int(kind == "interleaved")}
        target = add.outputs[0]
        if partial is not None:  # cat(rope(t[..., :rd]), t[..., rd:]) is RotaryEmbedding(t, rotary_embedding_dim=rd)
            x, attrs["rotary_embedding_dim"], concat = partial
            target = concat.outputs[0]
        xb = {"bhnd": lambda t: t,
              "bnhd": lambda t: emit.transpose(t, [0, 2, 1, 3]),
              "bnd": lambda t: emit.op("Unsqueeze", t, emit.ints([1]))}[layout](x)

        def half(table):
            flat = emit.op("Reshape", table, emit.ints([-1, d]))
            if kind == "half":
                return emit.op("Slice", flat, emit.ints([0]), emit.ints([d // 2]), emit.ints([1]))
            return emit.op("Slice", flat, emit.ints([0]), emit.ints([d]), emit.ints([1]), emit.ints([2]))

        shape = emit.op("Shape", xb)
        b_n = emit.op("Gather", shape, emit.ints([0, 2]))
        n = emit.op("Squeeze", emit.op("Slice", shape, emit.ints([2]), emit.ints([3])), emit.ints([0]))
        positions = emit.op("Range", np.asarray(0, dtype=np.int64), n, np.asarray(1, dtype=np.int64))
        position_ids = emit.op("Expand", emit.op("Unsqueeze", positions, emit.ints([0])), b_n)
        y = emit.op("RotaryEmbedding", xb, half(cos), half(sin), position_ids, attrs=attrs)
        y.dtype = target.dtype
        y = {"bhnd": lambda t: t,
             "bnhd": lambda t: emit.transpose(t, [0, 2, 1, 3]),
             "bnd": lambda t: emit.op("Squeeze", t, emit.ints([1]))}[layout](y)
        take_over(target, y, emit)
        part = f", rotary_embedding_dim={d} of {x.shape[-1]}" if partial is not None else ""
        return f"{kind} rotary → RotaryEmbedding(interleaved={attrs['interleaved']}{part}) on [{layout}] x"
