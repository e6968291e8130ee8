"""SparseAttention's ONNX local function: only allowed keys are touched, no tensor has two axes of length N."""

from __future__ import annotations

import numpy as np

from attnx.ops.function_builder import FunctionBuilder
from attnx.ops.sparse_attention.naive import window_offsets


def _f32(b: FunctionBuilder, value) -> str:
    return b.const(value, np.float32)


def function_body(b: FunctionBuilder, attrs, n_inputs: int, n_outputs: int):
    """The allowed-blocks-only ONNX body (module docstring), float32 inside."""
    q, k, v = (b.Cast(x, to=1) for x in ("q", "k", "v"))
    if attrs["scale"]:
        q = b.Mul(q, _f32(b, attrs["scale"]))
    else:
        q = b.Div(q, b.Sqrt(b.Cast(b.Shape(q, start=3), to=1)))
    n = b.Shape(q, start=2, end=3)                                            # [1]
    y = _block(b, q, k, v, n, attrs) if attrs["pattern"] == "block" else _windowed(b, q, k, v, n, attrs)
    b.rename(b.CastLike(y, "q"), "y")
    return b.build(["q", "k", "v"], ["y"])


def _pad_seq(b, x, pad):
    """Zero-pad axis 2 of [B, H, N, D] by `pad` ([1] int64) at the end."""
    return b.Pad(x, b.Concat(b.const([0, 0, 0, 0, 0, 0]), pad, b.const([0]), axis=0))


def _block(b, q, k, v, n, attrs):
    size = attrs["block"]
    c = b.const([size])
    pad = b.Mod(b.Sub(c, b.Mod(n, c)), c)

    back, ahead = attrs["look_back"], attrs["look_ahead"]

    def tiles(x):  # [B, H, N, D] → [B, H, N/b, b, D]
        x = _pad_seq(b, x, pad)
        return b.Reshape(x, b.Concat(b.Shape(x, end=2), b.const([-1, size]), b.Shape(x, start=3), axis=0))

    def around(x):  # [B, H, T, b, D] → [B, H, T, (1 + back + ahead)·b, D], each tile beside its neighbours
        if not back and not ahead:
            return x
        padded = b.Pad(x, b.const([0, 0, back, 0, 0, 0, 0, ahead, 0, 0]))
        last = np.iinfo(np.int64).max
        shifted = [b.Slice(padded, b.const([o]), b.const([o - back - ahead if o < back + ahead else last]),
                           b.const([2])) for o in range(back + ahead + 1)]
        return b.Concat(*shifted, axis=3)

    qt, kt, vt = tiles(q), around(tiles(k)), around(tiles(v))
    scores = b.MatMul(qt, b.Transpose(kt, perm=[0, 1, 2, 4, 3]))              # [B, H, N/b, b, L]
    n_pad = b.Add(n, pad)
    starts = b.Reshape(b.Range(b.const(0), b.Squeeze(n_pad), b.const(size)), b.const([-1, 1, 1]))  # [T, 1, 1]
    key_pos = b.Add(starts, b.const(list(range(-back * size, (ahead + 1) * size))))              # [T, 1, L]
    keep = b.And(b.GreaterOrEqual(key_pos, b.const(0)), b.Less(key_pos, n))  # real keys
    if attrs["causal"]:
        query_pos = b.Add(starts, b.const([[i] for i in range(size)]))        # [T, b, 1]
        keep = b.And(keep, b.LessOrEqual(key_pos, query_pos))                  # j <= i
    probs = b.Softmax(b.Where(keep, scores, _f32(b, -np.inf)), axis=-1)
    y = b.MatMul(probs, vt)                                                    # [B, H, N/b, b, E]
    y = b.Reshape(y, b.Concat(b.Shape(y, end=2), b.const([-1]), b.Shape(y, start=4), axis=0))
    return b.Slice(y, b.const([0]), n, b.const([2]))


def _windowed(b, q, k, v, n, attrs):
    offsets = window_offsets(attrs)
    span = max(abs(o) for o in offsets)
    d = b.const(offsets)                                                       # [L]
    i = b.Unsqueeze(b.Range(b.const(0), b.Squeeze(n), b.const(1)), b.const([1]))  # [N, 1]
    j = b.Sub(i, d)                                                            # [N, L]
    keep = b.And(b.GreaterOrEqual(j, b.const(0)), b.Less(j, n))
    both = b.const([span])
    pads = b.Concat(b.const([0, 0]), both, b.const([0, 0, 0]), both, b.const([0]), axis=0)
    index = b.Add(j, b.const(span))
    kw = b.Gather(b.Pad(k, pads), index, axis=2)                              # [B, H, N, L, D]
    vw = b.Gather(b.Pad(v, pads), index, axis=2)                              # [B, H, N, L, E]
    local = b.Squeeze(b.MatMul(b.Unsqueeze(q, b.const([3])), b.Transpose(kw, perm=[0, 1, 2, 4, 3])),
                      b.const([3]))                                            # [B, H, N, L]
    local = b.Where(keep, local, _f32(b, -np.inf))
    if attrs["pattern"] != "strided":
        probs = b.Softmax(local, axis=-1)
        return b.Squeeze(b.MatMul(b.Unsqueeze(probs, b.const([3])), vw), b.const([3]))

    # strided: keys of the query's residue mod t, other than those the window already holds
    t = attrs["stride"]
    c = b.const([t])
    pad = b.Mod(b.Sub(c, b.Mod(n, c)), c)
    n_pad = b.Add(n, pad)

    def residues(x):  # [B, H, N, D] → [B, H, t, N/t, D]: row ρ holds positions ρ, ρ + t, …
        x = _pad_seq(b, x, pad)
        x = b.Reshape(x, b.Concat(b.Shape(x, end=2), b.const([-1, t]), b.Shape(x, start=3), axis=0))
        return b.Transpose(x, perm=[0, 1, 3, 2, 4])

    qr, kr, vr = residues(q), residues(k), residues(v)
    far = b.MatMul(qr, b.Transpose(kr, perm=[0, 1, 2, 4, 3]))               # [B, H, t, A, A]
    rho = b.Range(b.const(0), b.const(t), b.const(1))
    a = b.Range(b.const(0), b.Div(b.Squeeze(n_pad), b.const(t)), b.const(1))
    pos = b.Add(b.Unsqueeze(b.Mul(a, b.const(t)), b.const([0])), b.Unsqueeze(rho, b.const([1])))  # [t, A]
    qi, kj = b.Unsqueeze(pos, b.const([2])), b.Unsqueeze(pos, b.const([1]))  # [t, A, 1], [t, 1, A]
    dd = b.Sub(qi, kj)
    w = attrs["window"]
    in_window = (b.And(b.GreaterOrEqual(dd, b.const(0)), b.Less(dd, b.const(w))) if attrs["causal"]
                 else b.LessOrEqual(b.Abs(dd), b.const(w)))
    keep_far = b.And(b.Less(kj, n), b.Not(in_window))
    if attrs["causal"]:
        keep_far = b.And(keep_far, b.GreaterOrEqual(dd, b.const(0)))
    far = b.Where(keep_far, far, _f32(b, -np.inf))

    def query_order(x):  # [B, H, t, A, ·] → [B, H, N, ·]
        x = b.Transpose(x, perm=[0, 1, 3, 2, 4])
        x = b.Reshape(x, b.Concat(b.Shape(x, end=2), b.const([-1]), b.Shape(x, start=4), axis=0))
        return b.Slice(x, b.const([0]), n, b.const([2]))

    probs = b.Softmax(b.Concat(local, query_order(far), axis=-1), axis=-1)   # [B, H, N, L + A]
    size = b.const([len(offsets)])
    p_local = b.Slice(probs, b.const([0]), size, b.const([-1]))
    p_far = _pad_seq(b, b.Slice(probs, size, b.const([np.iinfo(np.int64).max]), b.const([-1])), pad)
    p_far = b.Transpose(b.Reshape(p_far, b.Concat(b.Shape(p_far, end=2), b.const([-1, t]),
                                                  b.Shape(p_far, start=3), axis=0)), perm=[0, 1, 3, 2, 4])
    y_local = b.Squeeze(b.MatMul(b.Unsqueeze(p_local, b.const([3])), vw), b.const([3]))
    return b.Add(y_local, query_order(b.MatMul(p_far, vr)))
