"""Operands in the attention layout [B, H, N, D], whatever axis order and rank a graph keeps.

attnx nodes and ONNX Attention take [B, H, N, D]; a match found in a graph has its own axis
order and rank (GAU is single-head [B, N, D]). `to_bhnd` brings an operand there with
Transpose/Unsqueeze, `from_bhnd` brings a result back; `replace_qkv` does both around one
attention node that takes the place of a matched subgraph.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from attnx.surgeon.contraction import Operand
from attnx.surgeon.graph import Emitter, take_over

RANK = 4


def _leading_dims(op: Operand, labels: str) -> list | None:
    """The sizes (ints or symbols) shape inference gives `op` on the axes `labels`; None where unknown."""
    shape = op.tensor.shape
    if shape is None or len(shape) != len(op.labels):
        return None
    dims = [shape[op.labels.index(c)] for c in labels]
    return None if any(d is None or d == "" for d in dims) else dims


def _merge_leading(emit: Emitter, inputs: list[gs.Tensor], operands: list[Operand], lead: str):
    """q, k, v (and a bias), each [*lead, h, n, d] in the order `replace_qkv` gives them, with the axes
    `lead` merged into one: (merged inputs, the leading sizes as a 1-D int64 shape). An operand that
    broadcasts on a leading axis (size 1) is expanded to the common size first, so all merge alike; a
    bias that is 1 on every leading axis stays 1."""
    axes = len(lead)

    def dims_of(x, start, end=2 ** 62):
        return emit.op("Slice", emit.op("Shape", x), emit.ints([start]), emit.ints([end]))

    known = [_leading_dims(op, lead) for op in operands[:3]]
    size = dims_of(inputs[0], 0, axes)
    qkv = inputs[:3]
    if None in known or any(k != known[0] for k in known):  # not provably one size: broadcast them
        for x in qkv[1:]:
            size = emit.op("Max", size, dims_of(x, 0, axes))
        full = emit.op("Concat", size, emit.ints([1, 1, 1]), attrs={"axis": 0})
        qkv = [emit.op("Expand", x, full) for x in qkv]
    merged = [emit.op("Reshape", x, emit.op("Concat", emit.ints([-1]), dims_of(x, axes), attrs={"axis": 0}))
              for x in qkv]
    if len(inputs) > 3:
        bias, ones = inputs[3], _leading_dims(operands[3], lead)
        first = emit.ints([1])
        if ones is None or any(d != 1 for d in ones):
            bias = emit.op("Expand", bias, emit.op("Concat", size, emit.ints([1, 1, 1]), attrs={"axis": 0}))
            first = emit.ints([-1])
        merged.append(emit.op("Reshape", bias, emit.op("Concat", first, dims_of(bias, axes), attrs={"axis": 0})))
    return merged, size


def _added_axes(rank: int) -> list[int]:
    return list(range(1, 1 + RANK - rank)) if rank > 2 else [0, 1]


def to_bhnd(emit: Emitter, op: Operand, want: str) -> gs.Tensor:
    """`op` with its axes in order `want` ([batch…, token, feature]), unsqueezed to rank 4."""
    x = emit.relabel(op.tensor, op.labels, want)
    if len(want) < RANK:
        x = emit.op("Unsqueeze", x, emit.ints(_added_axes(len(want))))
    return x


def from_bhnd(emit: Emitter, y: gs.Tensor, have: str, want: str) -> gs.Tensor:
    """A rank-4 result whose real axes are `have` back to the graph's order `want`."""
    if len(have) < RANK:
        y = emit.op("Squeeze", y, emit.ints(_added_axes(len(have))))
    return emit.relabel(y, have, want)


def replace_qkv(emit: Emitter, op: str, attrs: dict, *, q: Operand, k: Operand, v: Operand, batch: str, n: str,
                m: str, d: str, e: str, out: gs.Tensor, out_labels: str, domain: str | None = None,
                bias: Operand | None = None, head_order: list[int] | None = None) -> None:
    """Make `out` (labels `out_labels`) the value of op(q, k, v[, bias]) computed in [B, H, N, D]: q
    labelled batch+n+d, k batch+m+d, v batch+m+e, a bias batch+n+m, the result batch+n+e. `head_order`
    (new head i is old head head_order[i]) reorders q's heads (and a bias's) before the op and the
    result's back after it."""
    inputs = [to_bhnd(emit, q, batch + n + d), to_bhnd(emit, k, batch + m + d), to_bhnd(emit, v, batch + m + e)]
    if bias is not None:
        inputs.append(to_bhnd(emit, bias, batch + n + m))
    lead = None
    if len(batch) > RANK - 2:  # [B, H, C, N, D] (FLASH with heads): the leading batch axes as one
        inputs, lead = _merge_leading(emit, inputs, [q, k, v] + ([bias] if bias is not None else []), batch[:-1])
    if head_order is not None:
        inputs[0] = emit.op("Gather", inputs[0], emit.ints(head_order), attrs={"axis": 1})
        if bias is not None and bias.tensor.shape is not None and \
                bias.tensor.shape[bias.labels.index(batch[-1])] != 1:
            inputs[3] = emit.op("Gather", inputs[3], emit.ints(head_order), attrs={"axis": 1})
    y = emit.op(op, *inputs, attrs=attrs, domain=domain)
    y.dtype = out.dtype
    if head_order is not None:
        y = emit.op("Gather", y, emit.ints(list(np.argsort(head_order))), attrs={"axis": 1})
        y.dtype = out.dtype
    if lead is not None:
        rest = emit.op("Slice", emit.op("Shape", y), emit.ints([1]), emit.ints([RANK]))
        y = emit.op("Reshape", y, emit.op("Concat", lead, rest, attrs={"axis": 0}))
        y.dtype = out.dtype
    take_over(out, from_bhnd(emit, y, batch + n + e, out_labels), emit)


def replace_attention(emit: Emitter, att, op: str, attrs: dict, domain: str | None = None,
                      bias: Operand | None = None) -> None:
    """`replace_qkv` for a matched `attention_pattern.QuadraticAttention`: op(q, k, v[, bias]) in place of
    its output."""
    replace_qkv(emit, op, attrs, q=att.q, k=att.k, v=att.v, batch=att.batch, n=att.n, m=att.m, d=att.d, e=att.e,
                out=att.output, out_labels=att.out_labels, domain=domain, bias=bias)
