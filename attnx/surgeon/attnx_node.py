"""Reading and emitting attnx nodes.

Reading: a node's attributes as the graph states them, every one of its spec's written out,
valid, and agreeing with the function overload the node names. A node short of one is refused,
never completed from the spec's defaults: an exported file always writes them all, and its
function body is specialised to them, so a default filled in could change what the node computes.

Emitting: attributes resolved through the op's spec, written in ONNX form and described for the
report; an attention node in place of a matched quadratic attention; LinearAttention for
operands in any axis order.

The attributes go through the op's spec, so nothing here restates them.
"""

from __future__ import annotations

from typing import Any, Mapping

import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from attnx.errors import AttnxError, OnnxFileError
from attnx.ops import DOMAIN, get_spec
from attnx.ops.spec import OpSpec
from attnx.surgeon.contraction import Operand
from attnx.surgeon.graph import Emitter
from attnx.surgeon.layout import replace_attention, replace_qkv

LINEAR = get_spec("LinearAttention")
# eps for a row sum the graph divides by without one (the spec wants eps > 0): far below
# float32 resolution of any positive row sum, so the result does not move
EPS_WHEN_ABSENT = 1e-12


def _decoded(node_name: str, op: str, name: str, value: Any) -> Any:
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise OnnxFileError(f"node {node_name!r} ({op}): attribute {name!r} = {value[:40]!r} is not UTF-8 text; "
                            "expected a string attribute in UTF-8") from None


def read_attributes(spec: OpSpec, attrs: Mapping[str, Any], node_name: str, *, overload: str = "",
                    n_inputs: int | None = None, n_outputs: int | None = None) -> dict:
    """The attributes of a `spec` node as the graph states them, resolved: every attribute of the
    spec present and valid, none unknown, and, where the node names a function `overload`, the ones
    that overload is specialised to (with the node's arities). Anything else is an OnnxFileError
    naming the node, the attribute, what the node says and what its function says."""
    given = {name: _decoded(node_name, spec.name, name, value) for name, value in attrs.items()}
    where = f"node {node_name!r} ({spec.name})"
    try:
        resolved = spec.resolve(given)
    except AttnxError as exc:
        raise OnnxFileError(f"{where}: {exc}") from exc
    said = spec.overload(resolved, n_inputs, n_outputs).split(",") if overload else None
    named = overload.split(",") if overload else None
    if named is not None and len(named) != len(said):
        raise OnnxFileError(f"{where} names function overload {overload!r}, which is not a {spec.name} "
                            f"specialisation: expected one of the form {','.join(said)}")
    missing = [i for i, a in enumerate(spec.attributes) if a.name not in given]
    if missing:
        defaults = ", ".join(f"{spec.attributes[i].name}={spec.attributes[i].to_onnx(spec.attributes[i].default)}"
                             for i in missing)
        function = f"; its function overload says {', '.join(named[i] for i in missing)}" if named else ""
        raise OnnxFileError(
            f"{where}: attribute(s) {', '.join(repr(spec.attributes[i].name) for i in missing)} missing{function}: "
            f"expected every {spec.name} attribute written out; attnx does not fill in the default(s) "
            f"({defaults}), which could change what the node computes")
    if named is not None:
        differ = [f"the node says {s}, its function overload says {n}" for s, n in zip(said, named) if s != n]
        if differ:
            raise OnnxFileError(f"{where} disagrees with the function it names ({overload!r}): {'; '.join(differ)}; "
                                "the graph was edited after export: set the attributes it should compute with and "
                                "export it again")
    return resolved


def read_node(node: onnx.NodeProto) -> tuple[OpSpec, dict]:
    """(spec, resolved attributes) of an attnx node of a ModelProto (`read_attributes`)."""
    try:
        spec = get_spec(node.op_type)
    except AttnxError as exc:
        raise OnnxFileError(f"node {node.name!r}: {exc}") from exc
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return spec, read_attributes(spec, attrs, node.name, overload=node.overload,
                                 n_inputs=len([i for i in node.input if i]), n_outputs=len(node.output))


def verify_attnx_nodes(model: onnx.ModelProto) -> None:
    """Refuse a model with an attnx node `read_node` refuses: before any pass rewrites the graph."""
    for node in model.graph.node:
        if node.domain == DOMAIN:
            read_node(node)


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
