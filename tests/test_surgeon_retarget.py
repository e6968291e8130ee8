"""The three forms: ort keeps functions, portable is standard ops only, trt names plugins from the spec."""

import onnx
import pytest

from attnx.errors import AttnxError
from attnx.ops import get_spec
from attnx.surgeon import optimize_model
from test_surgeon_models import QKV, QKV_AXES, EinsumLinearAttention, assert_same_outputs, export

PARSER_TYPE = {"int32": onnx.AttributeProto.INT, "float32": onnx.AttributeProto.FLOAT,
               "char": onnx.AttributeProto.STRING}


@pytest.fixture(scope="module")
def plain():
    return export(EinsumLinearAttention(), QKV, QKV_AXES)


def test_ort_form_keeps_a_local_function_per_node(plain):
    out, _ = optimize_model(plain, "ort")
    (node,) = out.graph.node
    assert node.domain == "attnx" and node.overload
    assert [(f.domain, f.name, f.overload) for f in out.functions] == [("attnx", node.op_type, node.overload)]


def test_portable_form_is_standard_ops_and_computes_the_same(plain, rng):
    out, _ = optimize_model(plain, "portable")
    assert not out.functions and {n.domain for n in out.graph.node} == {""}
    assert "attnx" not in {o.domain for o in out.opset_import}
    assert_same_outputs(plain, out, QKV, QKV_AXES, rng)


def test_trt_form_names_the_plugin_and_types_fields_as_the_parser_passes_them(plain):
    out, _ = optimize_model(plain, "trt")
    spec = get_spec("LinearAttention")
    (node,) = out.graph.node
    assert (node.op_type, node.domain, node.overload) == (spec.plugin.name, "trt.plugins", "")
    assert not out.functions
    attrs = {a.name: a for a in node.attribute}
    assert onnx.helper.get_attribute_value(attrs["plugin_version"]).decode() == spec.plugin.version
    assert onnx.helper.get_attribute_value(attrs["plugin_namespace"]).decode() == spec.plugin.namespace
    for field in spec.plugin_fields():
        assert attrs[field["name"]].type == PARSER_TYPE[field["type"]], field
    assert set(attrs) == {f["name"] for f in spec.plugin_fields()} | {"plugin_version", "plugin_namespace"}


def test_unknown_target_and_pass_say_what_exists(plain):
    with pytest.raises(AttnxError, match="expected one of ort, portable, trt"):
        optimize_model(plain, "tensorrt")
    with pytest.raises(AttnxError, match="unknown pass.*reassociate"):
        optimize_model(plain, "ort", ["reassociation"])
