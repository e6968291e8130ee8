"""Emitting attnx nodes: attributes resolved through the op's spec, written in ONNX form and
described for the report; an attention node in place of a matched quadratic attention;
LinearAttention for operands in any axis order.

The attributes go through the op's spec, so nothing here restates them.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from attnx.ops import get_spec
from attnx.ops.spec import OpSpec
from attnx.surgeon.contraction import Operand
from attnx.surgeon.graph import Emitter
from attnx.surgeon.layout import replace_attention, replace_qkv

LINEAR = get_spec("LinearAttention")
# eps for a row sum the graph divides by without one (the spec wants eps > 0): far below
# float32 resolution of any positive row sum, so the result does not move
EPS_WHEN_ABSENT = 1e-12


def describe(spec: OpSpec, resolved: dict) -> str:
    """Attributes as `name=value`, floats short."""
    return ", ".join(f"{a.name}={resolved[a.name]:g}" if a.type is float else f"{a.name}={resolved[a.name]}"
                     for a in spec.attributes)


def onnx_attrs(spec: OpSpec, attrs: dict) -> tuple[dict, dict]:
    """(attributes as the node stores them, every attribute resolved): defaults filled, values checked."""
    resolved = spec.resolve(attrs)
    return {a.name: a.to_onnx(resolved[a.name]) for a in spec.attributes}, resolved


def emit_node(emit: Emitter, spec: OpSpec, inputs: list, attrs: dict, dtype) -> tuple[gs.Tensor, dict]:
    """One `spec` node on `inputs`; (its output of `dtype`, the resolved attributes)."""
    stored, resolved = onnx_attrs(spec, attrs)
    y = emit.op(spec.name, *inputs, domain=spec.domain, attrs=stored)
    y.dtype = dtype
    return y, resolved


def emit_attention_node(emit: Emitter, spec: OpSpec, att, attrs: dict, bias: Operand | None = None) -> str:
    """One `spec` node on q, k, v (and a bias over the scores' axes) of a matched
    `attention_pattern.QuadraticAttention`, in place of its output; returns the attributes described."""
    stored, resolved = onnx_attrs(spec, attrs)
    replace_attention(emit, att, spec.name, stored, spec.domain, bias=bias)
    return describe(spec, resolved)


def emit_linear_attention(emit: Emitter, *, q: Operand, k: Operand, v: Operand, batch: str, n: str, m: str,
                          d: str, e: str, out: gs.Tensor, out_labels: str, attrs: dict) -> str:
    """Replace the value of `out` (labels `out_labels`) by LinearAttention(q, k, v, **attrs)."""
    stored, resolved = onnx_attrs(LINEAR, attrs)
    replace_qkv(emit, LINEAR.name, stored, q=q, k=k, v=v, batch=batch, n=n, m=m, d=d, e=e, out=out,
                out_labels=out_labels, domain=LINEAR.domain)
    return describe(LINEAR, resolved)
