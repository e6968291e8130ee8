"""The three forms: ort keeps functions, portable is standard ops only, trt names plugins from the spec."""

import onnx
import pytest

from attnx.errors import AttnxError
from attnx.ops import get_spec
from attnx.surgeon import optimize_model
from helpers.graphs import QKV, QKV_AXES, assert_same_outputs, export
from helpers.attention_models import EinsumLinearAttention

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
    # the plugin always has y and both states; TensorRT's parser wants one named node output per plugin output
    assert len(node.output) == len(spec.outputs) == 3 and all(node.output)
    assert node.output[0] == out.graph.output[0].name


def test_unknown_target_and_pass_say_what_exists(plain):
    with pytest.raises(AttnxError, match="expected one of ort, portable, trt, ort-trt"):
        optimize_model(plain, "tensorrt")
    with pytest.raises(AttnxError, match="unknown pass.*reassociate"):
        optimize_model(plain, "ort", ["reassociation"])


def test_portable_form_of_every_new_fusion_is_standard_ops_and_computes_the_same(rng):
    from helpers.attention_models import SoftmaxKernelPerformer
    from helpers.graphs import AXES3, QKV3
    from helpers.attention_models import CausalLocalAttention, Relu2, RotaryAttention

    cases = [(Relu2("n", True), QKV3, AXES3, 18), (CausalLocalAttention(), QKV, QKV_AXES, 18),
             (SoftmaxKernelPerformer(True), QKV, QKV_AXES, 18), (RotaryAttention(), QKV, QKV_AXES, 23)]
    for module, shapes, axes, opset in cases:
        model = export(module, shapes, axes, opset=opset)
        out, reports = optimize_model(model, "portable")
        assert sum(r.rewritten for r in reports) >= 1, type(module).__name__
        assert not out.functions and {n.domain for n in out.graph.node} == {""}, type(module).__name__
        assert_same_outputs(model, out, shapes, axes, rng, lengths=(1, 37))


def test_retarget_leaves_its_input_alone(plain):
    """The trt form once rewrote the attnx model in place, and optimize then counted the FLOPs of plugin
    nodes (none) as the optimized model's."""
    from attnx.surgeon.retarget import retarget

    attnx_form, _ = optimize_model(plain, "ort")
    before = attnx_form.SerializeToString()
    for target in ("trt", "ort-trt", "portable"):
        retarget(attnx_form, target)
        assert attnx_form.SerializeToString() == before, target
