"""Symbolic shape analysis for the checks, and MatMul/Einsum FLOPs at a given sequence length.

A dimension is an int (static), a str (a symbol such as "seq": dynamic) or None (unknown).
Exported attention has static head sizes and symbolic sequence lengths, which is what the
cost model below needs: a product whose cost has a term in N² is quadratic.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnx.inliner
from onnx import shape_inference

Dim = int | str | None


def fmt(d: Dim) -> str:
    return "?" if d is None else str(d)


def reassociation_gain(n: Dim, m: Dim, d: Dim, e: Dim) -> tuple[bool, str]:
    """Whether Q(KᵀV) costs fewer FLOPs than (QKᵀ)V for q [n, d], k [m, d], v [m, e], and why.

    (QKᵀ)V costs n·m·(d + e) multiply-adds, Q(KᵀV) costs (n + m)·d·e. Head sizes d, e must be
    static. With symbolic lengths the comparison is the one for long sequences (the leading
    term); the break-even length is given so a reader sees where it flips.
    """
    if not isinstance(d, int) or not isinstance(e, int):
        return False, f"head sizes must be static to compare costs, found d = {fmt(d)}, e = {fmt(e)}"
    if n is None or m is None:
        return False, f"sequence lengths are unknown (n = {fmt(n)}, m = {fmt(m)})"
    quad, lin = f"n·m·(d+e) = {fmt(n)}·{fmt(m)}·{d + e}", f"(n+m)·d·e = ({fmt(n)}+{fmt(m)})·{d * e}"
    if isinstance(n, int) and isinstance(m, int):
        saves = n * m * (d + e) > (n + m) * d * e
        return saves, f"{quad} = {n * m * (d + e)} vs {lin} = {(n + m) * d * e} multiply-adds"
    if isinstance(n, str) and isinstance(m, str):
        break_even = 2 * d * e / (d + e)
        return True, (f"{quad} is quadratic in the sequence, {lin} linear: fewer FLOPs once "
                      f"n = m > {break_even:g}")
    fixed = m if isinstance(m, int) else n
    saves = fixed * (d + e) > d * e
    return saves, (f"one length is static ({fixed}): per token of the dynamic length (QKᵀ)V costs "
                   f"{fixed}·{d + e} = {fixed * (d + e)}, Q(KᵀV) {d}·{e} = {d * e}")


def _fix_input_dims(model: onnx.ModelProto, seq_len: int) -> None:
    """Dynamic axis 0 of every input is the batch (1); every other dynamic axis is the sequence."""
    for inp in model.graph.input:
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                dim.dim_value = 1 if axis == 0 else seq_len


def _shapes(model: onnx.ModelProto) -> dict[str, list]:
    shapes = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(a.t.dims)
    return shapes


def _einsum_flops(equation: str, a: list, b: list) -> int | None:
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    if len(lhs) != 2 or "." in equation:
        return None
    sizes = {}
    for term, shape in zip(lhs, (a, b)):
        for label, size in zip(term, shape):
            sizes[label] = max(sizes.get(label, 1), size)
    return 2 * int(np.prod(list(sizes.values()), dtype=np.int64))


def _matmul_flops(a: list, b: list) -> int:
    a2 = [1, *a] if len(a) == 1 else a
    b2 = [*b, 1] if len(b) == 1 else b
    batch = np.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2]))
    return 2 * int(np.prod(batch, dtype=np.int64)) * a2[-2] * a2[-1] * b2[-1]


def _counted_form(model: onnx.ModelProto, seq_len: int) -> onnx.ModelProto:
    """Local functions inlined and standard Attention / RotaryEmbedding lowered (ONNX's schema functions
    are not inlined by onnx.inliner: an Attention node would count no FLOPs), at batch 1 and seq_len."""
    from attnx.errors import OnnxFileError
    from attnx.surgeon.lower import lower_standard_ops

    m = onnx.inliner.inline_local_functions(copy.deepcopy(model))
    _fix_input_dims(m, seq_len)
    try:
        m, _ = lower_standard_ops(m, lambda op, outputs: True)
    except OnnxFileError:  # a node the lowering refuses stays one node: uncounted_ops names it
        pass
    return shape_inference.infer_shapes(m, data_prop=True)


def uncounted_ops(model: onnx.ModelProto) -> list[str]:
    """The op types (domain::op) whose work matmul_flops cannot see: nodes outside the standard domain with
    no function body (a plugin node, another runtime's contrib op) and standard attention ops left whole."""
    m = _counted_form(model, 2)
    return sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                   for n in m.graph.node
                   if n.domain not in ("", "ai.onnx") or n.op_type in ("Attention", "RotaryEmbedding")})


def matmul_flops(model: onnx.ModelProto, seq_len: int) -> tuple[int, int]:
    """(FLOPs of every MatMul and Einsum, function bodies inlined and standard Attention lowered, at
    batch 1 and length seq_len; the number of such nodes whose shapes could not be resolved and are left
    out). Nodes with no body to look into are uncounted_ops'."""
    m = _counted_form(model, seq_len)
    shapes = _shapes(m)
    total, unresolved = 0, 0
    for node in m.graph.node:
        if node.op_type not in ("MatMul", "Einsum"):
            continue
        ins = [shapes.get(i) for i in node.input]
        if len(ins) != 2 or any(s is None or None in s or 0 in s for s in ins):
            unresolved += 1
            continue
        if node.op_type == "MatMul":
            total += _matmul_flops(*ins)
        else:
            eq = next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "equation")
            flops = _einsum_flops(eq.decode() if isinstance(eq, bytes) else eq, *ins)
            if flops is None:
                unresolved += 1
            else:
                total += flops
    return total, unresolved
