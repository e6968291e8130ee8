"""Bucketed local attention (local-attention's `LocalAttention` and its kin), read by probing.

The sequence is cut into buckets of w queries; each bucket's keys are its own bucket
concatenated with its neighbours' (look-back / look-ahead by Pad + Gather/Slice + Concat or
unfold), masked (causal, out of range, padding) and softmaxed. The scores are
[…, buckets, w, L·w], never N×N, so the N×N mask reading of fuse-sparse-attention does not apply.

`find_windowed(graph, att)` finds, for a quadratic attention whose query and key axes are
fixed sizes (w and L·w), the tensors it is a function of: q, k, v in [*, N, D] upstream of the
bucketing (through data-movement nodes and constant scales only) and the result in [*, N, E]
downstream of the un-bucketing. `identify_windowed` then runs that sub-graph in ONNX Runtime
on random q, k, v at several lengths (batch 2, one length not a multiple of w) and compares it
with SparseAttention's float64 reference for each pattern that could explain it (local causal
or not with window 1..L·w+1, block w causal or not with every look-back and look-ahead that
fits L). A pattern is taken only when every length
agrees within `RTOL`; spelling is never read for the pattern.

Exact equivalents (checked in tests/surgeon/test_public_sparse.py):
  causal, exact_windowsize=True, look_backward lb  → local causal, window w·lb + 1
  causal, exact_windowsize=False (the default)     → block w causal, look_back lb: a query at offset r
                                                      in its bucket sees w·lb + r keys back
  not causal, look_forward 0, exact_windowsize     → local causal, window w·lb + 1 (padding is ahead)
Not expressible, left alone: non-causal autopad without an input mask. It equals block w,
look_back lb, look_ahead lf only at lengths w divides; at others it attends to the zero keys
padded past the sequence end, and the probes include such a length.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs
import torch

from attnx.ops import get_spec
from attnx.surgeon.attention_pattern import QuadraticAttention
from attnx.surgeon.evaluate import depends_only_on, evaluate_cut
from attnx.surgeon.graph import constant_value, producer, scalar_constant

SPEC = get_spec("SparseAttention")
PATTERN_DEFAULTS = {name: value for name, value in SPEC.resolve({}).items() if name != "scale"}
# data movement between the q/k/v a model computes and the bucketed operands of the products
MOVES = {"Reshape", "Transpose", "Pad", "Slice", "Gather", "Concat", "Unsqueeze", "Squeeze", "Expand", "Identity",
         "Cast", "Flatten", "Tile"}
MAX_DEPTH = 40
# probe lengths: 1, a non-multiple of any window, and long enough for windows of up to 64 keys
PROBE_LENGTHS = (37, 1, 150)
PROBE_BATCH = 2
# float32 sub-graph vs float64 reference: sums of ≤ a few hundred terms (~1e-6 relative); a
# window one key off moves outputs by 1e-2 or more
RTOL = 1e-4


@dataclasses.dataclass
class Windowed:
    q: gs.Tensor          # [*, N, D] upstream of the bucketing
    k: gs.Tensor
    v: gs.Tensor          # [*, N, E]
    scale: float          # constant scales on the way from q and k to the scores
    bucket: int           # w: queries per bucket
    keys: int             # L·w: keys per bucket
    outs: list[gs.Tensor]  # what may hold the [*, N, E] result downstream of the un-bucketing, nearest first
    out: gs.Tensor | None = None  # the furthest of `outs` shaped like v at every probe length (`identify_windowed`)


def _scale_step(node: gs.Node) -> tuple[gs.Tensor, float] | None:
    """(data, f) for data·c, c·data, data/c with c a constant scalar; None otherwise."""
    if node.op not in ("Mul", "Div") or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if node.op == "Div":
        c = scalar_constant(b)
        return (a, 1.0 / c) if c else None
    for data, c in ((a, b), (b, a)):
        value = scalar_constant(c)
        if value is not None and constant_value(data) is None:
            return data, value
    return None


def _data_inputs(node: gs.Node) -> list[gs.Tensor]:
    if node.op == "Concat":
        return [t for t in node.inputs if constant_value(t) is None]
    return [node.inputs[0]] if node.inputs else []


def _upstream(tensor: gs.Tensor) -> list[tuple[gs.Tensor, float]]:
    """(tensor, product of constant scales from it to `tensor`) for every tensor reached going up
    through data movement and constant scales, nearest first."""
    seen, order, frontier = set(), [], [(tensor, 1.0)]
    for _ in range(MAX_DEPTH):
        nxt = []
        for t, f in frontier:
            if id(t) in seen:
                continue
            seen.add(id(t))
            order.append((t, f))
            node = producer(t)
            if node is None:
                continue
            scaled = _scale_step(node)
            if scaled is not None:
                nxt.append((scaled[0], f * scaled[1]))
            elif node.op in MOVES:
                nxt.extend((x, f) for x in _data_inputs(node))
        frontier = nxt
        if not frontier:
            break
    return order


def _downstream(tensor: gs.Tensor) -> list[gs.Tensor]:
    """Tensors reached going down through single-consumer data movement, nearest first."""
    chain = [tensor]
    for _ in range(MAX_DEPTH):
        consumers = [c for c in chain[-1].outputs if c.op != "Shape"]  # a Shape reads no values
        if len(consumers) != 1 or consumers[0].op not in MOVES - {"Concat"} or consumers[0].inputs[0] is not chain[-1]:
            break
        chain.append(consumers[0].outputs[0])
    return chain


def _sequence_shaped(t: gs.Tensor, last) -> bool:
    """[*, N, last] with N symbolic, rank 3 or 4."""
    shape = t.shape
    return (shape is not None and len(shape) in (3, 4) and shape[-1] == last and not isinstance(shape[-2], int)
            and shape[-2] is not None)


def _source(graph: gs.Graph, tensor: gs.Tensor, last) -> tuple[gs.Tensor, float] | None:
    """The furthest-up [*, N, last] tensor that every path to `tensor` passes through."""
    found = None
    for t, f in _upstream(tensor):
        if _sequence_shaped(t, last) and depends_only_on(tensor, [t], graph):
            found = (t, f)
    return found


def find_windowed(graph: gs.Graph, att: QuadraticAttention) -> Windowed | None:
    """The bucketed form's q, k, v, result and scale, or None when `att` is not bucketed."""
    w, keys, d, e = (att.dim(x) for x in (att.n, att.m, att.d, att.e))
    if not all(isinstance(x, int) for x in (w, keys, d, e)) or keys % w:
        return None
    q, k, v = _source(graph, att.q.tensor, d), _source(graph, att.k.tensor, d), _source(graph, att.v.tensor, e)
    if q is None or k is None or v is None:
        return None
    if not (q[0].shape[:-1] == k[0].shape[:-1] == v[0].shape[:-1]):
        return None
    outs = [t for t in _downstream(att.output)[1:] if t.shape is None or len(t.shape) == len(q[0].shape)]
    if not outs:
        return None
    return Windowed(q[0], k[0], v[0], q[1] * k[1], w, keys, outs)


def _candidates(w: int, keys: int):
    tiles = keys // w
    for causal in (True, False):
        for window in range(1, keys + 2):
            yield {"pattern": "local", "window": window, "causal": causal}
        for back in range(tiles):
            for ahead in range(tiles - back):
                yield {"pattern": "block", "block": w, "causal": causal, "look_back": back, "look_ahead": ahead}


def _probe_shape(t: gs.Tensor, n: int) -> list[int]:
    return [x if isinstance(x, int) else (PROBE_BATCH if i == 0 else n) for i, x in enumerate(t.shape[:-2])] + \
        [n, t.shape[-1]]


def identify_windowed(graph: gs.Graph, win: Windowed, step_scale: float) -> tuple[dict | None, str]:
    """(SparseAttention attributes, what was found) for the sub-graph win.q, k, v → win.out."""
    rng = np.random.default_rng(0)
    scale = win.scale * step_scale
    runs = []
    shaped = set(range(len(win.outs)))
    for n in PROBE_LENGTHS:
        probes = [rng.standard_normal(_probe_shape(t, n)).astype(np.float32) for t in (win.q, win.k, win.v)]
        got = evaluate_cut(graph, [win.q, win.k, win.v], win.outs, probes, n, PROBE_BATCH)
        if got is None:
            return None, f"the windowed sub-graph does not run at length {n} with batch {PROBE_BATCH}"
        shaped &= {i for i, y in enumerate(got) if y.shape == probes[2].shape}
        runs.append(([torch.from_numpy(p).double() for p in probes], got))
    if not shaped:
        return None, (f"no tensor after the un-bucketing of {win.outs[0].name} has v's shape [*, N, E] at every "
                      f"probe length")
    last = max(shaped)
    win.out = win.outs[last]
    runs = [(qkv, got[last].astype(np.float64)) for qkv, got in runs]

    def as_bhnd(x):
        return x if x.dim() == 4 else x.unsqueeze(1)

    for cand in _candidates(win.bucket, win.keys):
        attrs = {**PATTERN_DEFAULTS, **cand, "scale": scale}
        ok = True
        for (q, k, v), got in runs:
            want = SPEC.reference(as_bhnd(q), as_bhnd(k), as_bhnd(v), **attrs)[0].reshape(got.shape).numpy()
            if np.abs(got - want).max() > RTOL * max(np.abs(want).max(), 1e-6):
                ok = False
                break
        if ok:
            return attrs, f"equals SparseAttention({cand['pattern']}) at lengths {', '.join(map(str, PROBE_LENGTHS))}"
    return None, (f"buckets of {win.bucket} queries over {win.keys} keys, run at lengths "
                  f"{', '.join(map(str, PROBE_LENGTHS))}, equal no SparseAttention local or block pattern (e.g. "
                  f"padded keys past the sequence end that are attended)")
