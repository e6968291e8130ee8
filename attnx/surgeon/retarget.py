"""The three forms of one graph (DESIGN.md, "Three forms of one graph").

ort       attnx nodes with their local functions: any ONNX Runtime runs the file.
portable  functions inlined by onnx.inliner: standard ops only.
trt       each attnx node becomes its TensorRT plugin node: op_type = the spec's plugin name,
          domain trt.plugins, `plugin_version` and `plugin_namespace` attributes, no local
          functions, attributes in the types the TensorRT ONNX parser hands to plugins
          (int → INT read as int32, float → FLOAT read as float32, str → STRING read as char),
          and every output of the plugin named (the parser wants as many as the plugin has);
          standard Attention / RotaryEmbedding that the given TensorRT version's parser lacks
          lowered to primitive ops (attnx.surgeon.trt_versions, attnx.surgeon.lower).
ort-trt   what ONNX Runtime's TensorRT provider takes: the trt form's plugin nodes (the provider loads
          them through trt_extra_plugin_lib_paths as custom ops of domain trt.plugins), with every
          standard Attention / RotaryEmbedding lowered (the provider places them on other providers).
Everything comes from the op's spec (`spec.plugin`, `spec.attributes`).
"""

from __future__ import annotations

import onnx
import onnx.inliner
import onnx_graphsurgeon as gs
from onnx import helper

from attnx.errors import OnnxFileError
from attnx.exporters.functions import attach_local_functions
from attnx.ops import DOMAIN
from attnx.surgeon.attnx_node import read_node, verify_attnx_nodes
from attnx.surgeon.graph import import_graph
from attnx.surgeon.lower import lower_standard_ops
from attnx.surgeon import trt_versions
from attnx.surgeon.names import TARGETS

TRT_DOMAIN = "trt.plugins"
_INT32 = (-(2**31), 2**31 - 1)


def to_ort(model: onnx.ModelProto) -> onnx.ModelProto:
    return attach_local_functions(model)


def to_portable(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.inliner.inline_local_functions(attach_local_functions(model))
    left = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if left:
        raise OnnxFileError(f"inlining left non-standard nodes {', '.join(left)}; the portable form must hold "
                            "standard ONNX ops only")
    _drop_opset(model, DOMAIN)
    graph = import_graph(model)  # specialised bodies leave constants their branch did not use
    cleaned = gs.export_onnx(graph.cleanup(), do_type_check=False)
    cleaned.ir_version = model.ir_version
    cleaned.metadata_props.extend(model.metadata_props)
    return cleaned


def _plugin_attribute(spec, name: str, value) -> onnx.AttributeProto:
    attr = spec.attr(name)
    value = attr.to_onnx(value)
    if attr.type in (bool, int) and not _INT32[0] <= value <= _INT32[1]:
        raise OnnxFileError(f"{spec.name}: attribute '{name}' = {value} does not fit the plugin field's int32")
    if attr.type is float:
        return helper.make_attribute(name, float(value), attr_type=onnx.AttributeProto.FLOAT)
    if attr.type is str:
        return helper.make_attribute(name, value, attr_type=onnx.AttributeProto.STRING)
    return helper.make_attribute(name, int(value), attr_type=onnx.AttributeProto.INT)


def to_trt(model: onnx.ModelProto, trt_version: tuple[int, int] | None = None) -> onnx.ModelProto:
    """Plugin nodes, and the standard ops TensorRT `trt_version`'s parser lacks lowered (default: the
    installed TensorRT's version, else the oldest supported)."""
    if trt_version is None:
        trt_version, _ = trt_versions.default_version()
    return _plugin_form(model, trt_version)


def to_ort_trt(model: onnx.ModelProto, trt_version: tuple[int, int] | None = None) -> onnx.ModelProto:
    return _plugin_form(model, None)


def _plugin_form(model: onnx.ModelProto, trt_version: tuple[int, int] | None) -> onnx.ModelProto:
    """trt_version None: for ONNX Runtime's TensorRT provider (every lowerable op lowered)."""
    model, _ = lower_standard_ops(model, lambda op, outputs: not trt_versions.parser_takes(op, trt_version, outputs))
    model = attach_local_functions(model)  # every node's functions, its attributes already complete
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        spec, attrs = read_node(node)
        del node.attribute[:]
        node.attribute.extend(_plugin_attribute(spec, a.name, attrs[a.name]) for a in spec.attributes)
        node.attribute.extend([helper.make_attribute("plugin_version", spec.plugin.version),
                               helper.make_attribute("plugin_namespace", spec.plugin.namespace)])
        node.op_type, node.domain, node.overload = spec.plugin.name, TRT_DOMAIN, ""
        _name_every_output(node, spec)
    del model.functions[:]
    _drop_opset(model, DOMAIN)
    if any(n.domain == TRT_DOMAIN for n in model.graph.node) and not any(
            o.domain == TRT_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(TRT_DOMAIN, 1))
    return model


def _name_every_output(node: onnx.NodeProto, spec) -> None:
    """A plugin has every output of its spec, and TensorRT's ONNX parser wants as many named node outputs
    as the plugin has (an unnamed or missing one is an error there): name the ones the graph left out."""
    names = list(node.output) + [""] * (len(spec.outputs) - len(node.output))
    base = node.output[0]
    del node.output[:]
    node.output.extend(name or f"{base}.{arg.name}" for name, arg in zip(names, spec.outputs))


def _drop_opset(model: onnx.ModelProto, domain: str) -> None:
    keep = [o for o in model.opset_import if o.domain != domain]
    del model.opset_import[:]
    model.opset_import.extend(keep)


RETARGET = {"ort": to_ort, "portable": to_portable, "trt": to_trt, "ort-trt": to_ort_trt}


def retarget(model: onnx.ModelProto, target: str, trt_version: tuple[int, int] | None = None) -> onnx.ModelProto:
    """`model` (attnx form) in the form `target`, checked by onnx.checker; an attnx node with
    attributes missing, invalid or disagreeing with its function overload is refused, not completed.
    `model` is not modified. `trt_version` is read by the trt form only."""
    if target not in RETARGET:
        raise OnnxFileError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    verify_attnx_nodes(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the forms rewrite nodes in place; the caller still counts FLOPs on `model`
    out = RETARGET[target](copy, trt_version) if target in ("trt", "ort-trt") else RETARGET[target](copy)
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as exc:
        raise OnnxFileError(f"the {target} form fails onnx.checker: {exc}") from exc
    return out
