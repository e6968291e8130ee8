"""Attach the ONNX local function of every attnx node, so a plain ONNX Runtime runs the file.

Each node gets its attributes written out in full (defaults included, so a plugin or a
reader never guesses), its unused optional outputs trimmed, and the `overload` naming the
function specialised to those attributes and arities (ONNX IR ≥ 10). One function per
distinct overload is added to the model.
"""

from __future__ import annotations

import onnx
from onnx import helper

from attnx.errors import OnnxFileError
from attnx.ops import DOMAIN, VERSION, get_spec

MIN_IR_VERSION = 10  # function overloads


def node_attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes as Python values (strings decoded)."""
    attrs = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        attrs[a.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


def _consumed_names(graph: onnx.GraphProto) -> set[str]:
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= _consumed_names(a.g)
    return names


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise OnnxFileError("the model imports no default ONNX opset")


def attach_local_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Complete every attnx node and add its function body; returns the same model."""
    opset = model_opset(model)
    consumed = _consumed_names(model.graph)
    have = {(f.domain, f.name, f.overload) for f in model.functions}
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        spec = get_spec(node.op_type)
        try:
            attrs = spec.resolve(node_attributes(node))
        except Exception as exc:
            raise OnnxFileError(f"node {node.name!r}: {exc}") from exc
        outputs = list(node.output)
        if not any(o and o in consumed for o in outputs[1:]):
            del node.output[1:]
        inputs = [i for i in node.input if i]
        del node.input[:]
        node.input.extend(inputs)
        del node.attribute[:]
        node.attribute.extend(helper.make_attribute(a.name, a.to_onnx(attrs[a.name])) for a in spec.attributes)
        node.overload = spec.overload(attrs, len(node.input), len(node.output))
        key = (node.domain, node.op_type, node.overload)
        if key not in have:
            model.functions.append(spec.function_body(attrs, len(node.input), len(node.output), opset))
            have.add(key)
    used = {(n.domain, n.op_type, n.overload) for n in model.graph.node}
    stale = [f for f in model.functions if f.domain == DOMAIN and (f.domain, f.name, f.overload) not in used]
    for f in stale:  # a node re-attached with new attributes leaves its old specialisation unused
        model.functions.remove(f)
    if not any(imp.domain == DOMAIN for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, VERSION))
    model.ir_version = max(model.ir_version, MIN_IR_VERSION)
    return model


def verify_local_functions(model: onnx.ModelProto) -> None:
    """Refuse attnx nodes whose attributes disagree with the function they name.

    A function body is specialised to its node's attributes, so an attribute edited after
    export would otherwise be silently ignored.
    """
    have = {(f.domain, f.name, f.overload) for f in model.functions}
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        spec = get_spec(node.op_type)
        try:
            expected = spec.overload(node_attributes(node), len([i for i in node.input if i]), len(node.output))
        except Exception as exc:
            raise OnnxFileError(f"node {node.name!r} ({node.op_type}): {exc}") from exc
        if node.overload != expected:
            raise OnnxFileError(
                f"node {node.name!r} ({node.op_type}) names function overload {node.overload!r} but its attributes "
                f"and arity call for {expected!r}: the graph was edited after export; run "
                "attnx.exporters.attach_local_functions on it")
        if (node.domain, node.op_type, node.overload) not in have:
            raise OnnxFileError(f"node {node.name!r} ({node.op_type}) names function overload {node.overload!r}, "
                                "which the model does not contain")
