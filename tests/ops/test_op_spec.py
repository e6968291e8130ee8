"""The op registry: attribute validation, defaults, and what derives from a spec."""

import onnx
import pytest

from attnx.errors import AttributeValueError
from attnx.ops import REGISTRY, get_spec, register_onnx_schemas

SPEC = get_spec("LinearAttention")


@pytest.mark.parametrize("name, value, allowed", [
    ("feature_map", "gelu", "one of 'elu', 'relu', 'identity'"),
    ("eps", 0.0, "float > 0"),
    ("eps", -1e-6, "float > 0"),
    ("eps", float("nan"), "float > 0"),
    ("chunk_size", 0, "int >= 1"),
    ("chunk_size", 5000, "<= 4096"),
    ("chunk_size", 2.5, "int >= 1"),
    ("causal", 2, "a bool"),
    ("causal", "yes", "a bool"),
])
def test_bad_attribute_names_op_attribute_value_and_allowed(name, value, allowed):
    with pytest.raises(AttributeValueError) as err:
        SPEC.resolve({name: value})
    msg = str(err.value)
    assert msg.startswith("LinearAttention: attribute ") and f"'{name}'" in msg
    assert repr(value) in msg and allowed in msg


def test_unknown_attribute_lists_the_real_ones():
    with pytest.raises(AttributeValueError, match="no attribute 'window'.*causal, feature_map"):
        SPEC.resolve({"window": 3})


def test_resolve_fills_defaults_and_coerces():
    attrs = SPEC.resolve({"causal": 1, "eps": 1})
    assert attrs == {"causal": True, "feature_map": "elu", "normalize": True, "eps": 1.0, "chunk_size": 64}


def test_overload_names_every_attribute_and_arity():
    a = SPEC.overload({"causal": True}, 3, 1)
    b = SPEC.overload({"causal": False}, 3, 1)
    c = SPEC.overload({"causal": True}, 5, 3)
    assert len({a, b, c}) == 3 and "causal=1" in a and "in=5" in c and "out=3" in c


def test_onnx_schema_is_registered_once_from_the_spec():
    register_onnx_schemas()
    register_onnx_schemas()
    schema = onnx.defs.get_schema("LinearAttention", 1, "attnx")
    assert [i.name for i in schema.inputs] == [t.name for t in SPEC.inputs]
    assert set(schema.attributes) == {a.name for a in SPEC.attributes}


def test_plugin_fields_use_the_types_the_trt_parser_passes():
    fields = {f["name"]: f for f in SPEC.plugin_fields()}
    assert fields["causal"]["type"] == "int32" and fields["eps"]["type"] == "float32"
    assert fields["feature_map"] == {"name": "feature_map", "type": "char", "default": "elu"}
    assert SPEC.plugin.name == "LinearAttention" and SPEC.plugin.namespace == "attnx"


def test_every_registered_op_has_reference_body_and_plugin():
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.domain == "attnx" and spec.version == 1
        assert callable(spec.reference) and callable(spec.function_body)
        assert spec.plugin.version == "1"


def test_kernel_bindings_take_the_attributes_in_spec_order_and_choices_as_their_index():
    """Each op's forward entry point takes its attributes after the sizes, in the spec's order, just
    before dtype and stream; a string choice travels as its index in the spec's choices."""
    from attnx.ops import ENTRY_POINTS
    from attnx.ops.entry_point import attribute_values

    assert set(ENTRY_POINTS) == set(REGISTRY)
    for name, spec in REGISTRY.items():
        params = [p for p, _ in ENTRY_POINTS[name][0].params]
        assert params[-2:] == ["dtype", "stream"]
        assert params[-2 - len(spec.attributes):-2] == [a.name for a in spec.attributes], name
    attrs = SPEC.resolve({"causal": True, "feature_map": "identity", "eps": 1e-3})
    assert attribute_values(SPEC, attrs) == [1, 2, 1, 1e-3, 64]
