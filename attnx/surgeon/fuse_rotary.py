"""Fusion: x·cos + rot(x)·sin (RoPE) → ONNX `RotaryEmbedding` (opset 23).

Pattern: Add(Mul(x, cos), Mul(r, sin)) where r is computed from x alone (rotate-half,
interleaved, through Slice, Split, Gather, Reshape or einops-style spellings); each product may
carry the same scalar constant (x-transformers' xpos scale, 1 when unused), applied after.
Checks:
  rotation_of_x           r, evaluated on a probe x, equals rotate_half(x) = [−x₂, x₁] (halves)
                          or the interleaved rotation [−x₁, x₀, −x₃, x₂, …]
  cos_sin_from_lengths    cos and sin reach graph inputs only through Shape nodes (positions
                          0…n−1 computed in the graph, or a constant table sliced to n)
  cos_sin_are_tables      evaluated at several lengths (x's token axis symbolic) or once (static:
                          a ViT's patches, one row per token), cos and sin are [n, D] tables over
                          the token axis of x, or [H, N, D] per-head tables (timm's mixed 2-D RoPE)
  caches_repeat_halves    their two halves (rotate-half) or even/odd columns (interleaved) agree
  fits_rotary_embedding   x is [B, H, N, D], [B, N, H, D] or [B, N, D]
  opset_supports_op       the model's opset is ≥ 23 (else reported, not rewritten)
Rewrite: RotaryEmbedding(x in [B, H, N, D], cos_cache = the half table [n, D/2], sin_cache,
position_ids = 0…n−1 per batch row, interleaved); layouts restored. A partial rotation,
cat(rope(t[..., :rd]), t[..., rd:]), becomes RotaryEmbedding(t, rotary_embedding_dim=rd). Per-head
tables fold the heads into the batch: RotaryEmbedding(x as [B·H, 1, N, D], 3-D caches [B·H, N, D/2]).
x's axes left as unknown symbols by shape analysis (TorchScript) are read by running the graph.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, constant_value, producer, take_over
from attnx.surgeon.evaluate import depends_only_on, evaluate_from, probe_for, shape_only, values_at_lengths_why

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


def _factors(tensor: gs.Tensor, depth: int = 3) -> list[gs.Tensor]:
    """The factors of a product written as nested Mul nodes (up to `depth` deep), else [tensor]."""
    node = producer(tensor)
    if depth == 0 or node is None or node.op != "Mul" or len(node.inputs) != 2:
        return [tensor]
    return [f for t in node.inputs for f in _factors(t, depth - 1)]


def _scale_of(factors: list[gs.Tensor]) -> tuple[float, list[gs.Tensor]]:
    """(product of the scalar-constant factors, the other factors)."""
    scale, rest = 1.0, []
    for f in factors:
        value = constant_value(f)
        if value is not None and value.size == 1:
            scale *= float(value.reshape(()))
        else:
            rest.append(f)
    return scale, rest


def _rope_terms(add: gs.Node):
    """(x, cos, r, sin, scale) for add = (x·cos + r·sin)·scale with r computed from x (either product first,
    any order of the factors; scale a constant on both products, x-transformers' xpos scale of 1); None
    otherwise."""
    if len(add.inputs) != 2 or any(producer(t) is None or producer(t).op != "Mul" for t in add.inputs):
        return None
    terms = [_scale_of(_factors(t)) for t in add.inputs]
    if any(len(rest) != 2 for _, rest in terms) or not np.isclose(terms[0][0], terms[1][0], rtol=1e-7, atol=0):
        return None
    scale = terms[0][0]
    for (_, first), (_, second) in ((terms[0], terms[1]), (terms[1], terms[0])):
        for x, cos in ((first[0], first[1]), (first[1], first[0])):
            if constant_value(x) is not None:
                continue
            for r, sin in ((second[0], second[1]), (second[1], second[0])):
                if r is not x and _descends_from(r, x):
                    return x, cos, r, sin, scale
    return None


def _refine_shape(graph: gs.Graph, x: gs.Tensor) -> None:
    """Where shape analysis left x's axes as unknown symbols (TorchScript exports: `unk__67`), read them
    by running the graph at two lengths: an axis whose size does not change with the length is that size.
    Only symbolic axes are replaced; x's rank must already be known."""
    if not x.shape or all(isinstance(d, int) for d in x.shape[1:]):
        return
    values, _ = values_at_lengths_why(graph, x, EVAL_LENGTHS)
    if values is None or any(v.ndim != len(x.shape) for v in values):
        return
    x.shape = [d if isinstance(d, int) or i == 0 or values[0].shape[i] != values[1].shape[i]
               else int(values[0].shape[i]) for i, d in enumerate(x.shape)]


def _rotation(graph: gs.Graph, x: gs.Tensor, r: gs.Tensor) -> str | None:
    """'half', 'interleaved' or None: r evaluated as a function of x alone on a probe input.

    Shapes the rotation reads from other tensors (a Reshape to [..., D/2, 2]) come from graph
    inputs fed with zeros, every symbolic axis at the probe's size.
    """
    if not x.shape or not isinstance(x.shape[-1], int) or x.shape[-1] % 2 or not depends_only_on(r, x, graph):
        return None
    probe = probe_for(x, graph=graph)
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


def _token_lengths(x: gs.Tensor) -> tuple[int, ...] | None:
    """EVAL_LENGTHS when an axis of x that may hold tokens (-2, -3) is symbolic; None when both are static
    (a ViT's patches: the table is fixed, one row per token, told apart from heads by its row count)."""
    return EVAL_LENGTHS if any(not isinstance(d, int) for d in x.shape[-3:-1]) else None


def _per_head_table(value: np.ndarray, x: gs.Tensor, d: int) -> np.ndarray | None:
    """The [H, N, d] table of a per-head cos/sin value against x in [B, H, N, D] (static H and N), else None."""
    while value.ndim > 3 and value.shape[0] == 1:
        value = value[0]
    if len(x.shape) != 4 or value.shape != (x.shape[1], x.shape[2], d) or x.shape[1] == 1:
        return None
    return value


def _read_tables(graph: gs.Graph, x: gs.Tensor, cos: gs.Tensor, sin: gs.Tensor, d: int):
    """([(cos table, sin table, token axis) at each length read], why-not). cos and sin are evaluated in
    ONNX Runtime at several lengths (symbolic token axis) or once (static: then the table has as many rows
    as x has tokens, on axis -2 or -3)."""
    lengths = _token_lengths(x)
    read = EVAL_LENGTHS if lengths is None else lengths
    values = []
    for t in (cos, sin):
        v, why = values_at_lengths_why(graph, t, read)
        if v is None:
            return None, f"ONNX Runtime could not evaluate {'cos' if t is cos else 'sin'} ({t.name}): {why}"
        values.append(v)
    if lengths is None:  # static tokens: the same table at every length, rows = x's tokens
        if any(not np.array_equal(v[0], v[-1]) for v in values):
            return None, "cos and sin change with the inputs' lengths while x's token axis is static"
        candidates = [n for n in dict.fromkeys(x.shape[-3:-1]) if isinstance(n, int)]
        for n in candidates:
            pairs = [(_table(c, n, d), _table(s_, n, d)) for c, s_ in zip(values[0][:1], values[1][:1])]
            if all(a is not None and b is not None and a[1] == b[1] and x.shape[a[1]] == n for a, b in pairs):
                return [(a[0], b[0], a[1]) for a, b in pairs], ""
        shapes = sorted({str(list(v[0].shape)) for v in values})
        per_head = [_per_head_table(v[0], x, d) for v in values]
        if all(t is not None for t in per_head):  # timm's mixed 2-D RoPE learns its frequencies per head
            return [(per_head[0], per_head[1], "heads")], ""
        if all(v[0].ndim >= 3 and v[0].shape[-3] in x.shape[-3:-1] and v[0].shape[-3] > 1 for v in values):
            return None, (f"cos and sin are {' and '.join(shapes)}: one table per head, for x of shape {x.shape}; "
                          "per-head tables are read for x in [B, H, N, D] only")
        return None, (f"cos and sin are {' and '.join(shapes)}: expected [{'/'.join(map(str, candidates))}, {d}] "
                      "tables (one row per token of x, broadcast over batch and heads)")
    pairs = [(_table(c, n, d), _table(s_, n, d)) for c, s_, n in zip(values[0], values[1], read)]
    if not all(a is not None and b is not None and a[1] == b[1] for a, b in pairs) or \
            len({a[1] for a, _ in pairs}) != 1:
        shapes = sorted({str(list(v[0].shape)) for v in values})
        return None, (f"cos and sin are {' and '.join(shapes)} at length {read[0]}: expected [n, {d}] tables over "
                      "the token axis of x, broadcast over batch and heads")
    return [(a[0], b[0], a[1]) for a, b in pairs], ""


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

    def checks(self, match: Match, graph: gs.Graph, add: gs.Node, x, cos, r, sin, scale) -> None:
        _refine_shape(graph, x)
        kind = _rotation(graph, x, r)
        if not match.check("rotation_of_x", kind is not None,
                           f"{kind} rotation of x" if kind else
                           "the term multiplied by sin is not rotate-half or the interleaved rotation of x "
                           f"(x {x.name} of shape {x.shape})"):
            return
        tables = shape_only(cos, graph) and shape_only(sin, graph)
        if not match.check("cos_sin_from_lengths", tables,
                           "cos and sin depend on the graph inputs' lengths only" if tables else
                           "cos and sin depend on graph inputs' values (e.g. position ids); not a fixed table"):
            return
        d = x.shape[-1]
        read, why = _read_tables(graph, x, cos, sin, d)
        if not match.check("cos_sin_are_tables", read is not None,
                           f"cos and sin are [n, {d}] tables over the token axis of x" if read else why):
            return
        agree = all(_halves_agree(c, kind) and _halves_agree(s_, kind) for c, s_, _ in read)
        if not match.check("caches_repeat_halves", agree,
                           f"cos and sin repeat their {kind} halves" if agree else
                           f"the {kind} halves of cos or sin differ: not one angle per rotated pair"):
            return
        axis = read[0][2]
        r_x = len(x.shape)
        layout = {(4, -2): "bhnd", (4, -3): "bnhd", (3, -2): "bnd", (4, "heads"): "bhnd"}.get((r_x, axis))
        per_head = axis == "heads"
        if not match.check("fits_rotary_embedding", layout is not None,
                           f"x is [{layout}]" if layout else f"x of rank {r_x} with tokens on axis {axis}"):
            return
        match.bound = (add, x, cos, sin, kind, layout, _partial(add, x) if scale == 1.0 else None, scale, per_head)

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        add, x, cos, sin, kind, layout, partial, scale, per_head = match.bound
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
        if per_head:  # heads folded into the batch: one [N, D/2] cache per (batch row, head), 3-D caches
            h, n_static = x.shape[1], x.shape[2]
            folded = emit.op("Reshape", xb, emit.ints([-1, 1, n_static, x.shape[-1]]))
            b_h = emit.op("Concat", emit.op("Slice", shape, emit.ints([0]), emit.ints([1])),
                          emit.ints([h, n_static, -1]), attrs={"axis": 0})

            def per_row(table):
                rows = emit.op("Reshape", half(table), emit.ints([1, h, n_static, -1]))
                rows = emit.op("Expand", rows, emit.op("Max", b_h, emit.ints([1, 1, 1, 1])))
                return emit.op("Reshape", rows, emit.ints([-1, n_static, d // 2]))

            y = emit.op("RotaryEmbedding", folded, per_row(cos), per_row(sin), attrs=attrs)
            y = emit.op("Reshape", y, shape)
            y.dtype = target.dtype
            if scale != 1.0:
                y = emit.op("Mul", y, np.asarray(scale, dtype=target.dtype or np.float32))
                y.dtype = target.dtype
            take_over(target, y, emit)
            return (f"{kind} rotary with one table per head → RotaryEmbedding(interleaved={attrs['interleaved']}) "
                    "on x with heads folded into the batch, 3-D caches")
        b_n = emit.op("Gather", shape, emit.ints([0, 2]))
        n = emit.op("Squeeze", emit.op("Slice", shape, emit.ints([2]), emit.ints([3])), emit.ints([0]))
        positions = emit.op("Range", np.asarray(0, dtype=np.int64), n, np.asarray(1, dtype=np.int64))
        position_ids = emit.op("Expand", emit.op("Unsqueeze", positions, emit.ints([0])), b_n)
        y = emit.op("RotaryEmbedding", xb, half(cos), half(sin), position_ids, attrs=attrs)
        y.dtype = target.dtype
        y = {"bhnd": lambda t: t,
             "bnhd": lambda t: emit.transpose(t, [0, 2, 1, 3]),
             "bnd": lambda t: emit.op("Squeeze", t, emit.ints([1]))}[layout](y)
        if scale != 1.0:  # (x·cos + r·sin)·s: the same scale on both products
            y = emit.op("Mul", y, np.asarray(scale, dtype=target.dtype or np.float32))
            y.dtype = target.dtype
        take_over(target, y, emit)
        part = f", rotary_embedding_dim={d} of {x.shape[-1]}" if partial is not None else ""
        return f"{kind} rotary → RotaryEmbedding(interleaved={attrs['interleaved']}{part}) on [{layout}] x"
