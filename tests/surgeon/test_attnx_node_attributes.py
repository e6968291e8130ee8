"""optimize never changes what an attnx node computes: a node whose attributes are missing, invalid or
disagree with the function overload it names is refused (exit 2), not completed from defaults."""

import onnx
import pytest
from onnx import helper

from attnx.cli.main import main
from attnx.errors import OnnxFileError
from attnx.surgeon import optimize_model
from attnx.surgeon.retarget import retarget


def _edited(path, edit):
    """The model at `path` with `edit(node)` applied to its first LinearAttention node."""
    model = onnx.load(path)
    node = next(n for n in model.graph.node if n.op_type == "LinearAttention" and n.domain == "attnx")
    edit(node)
    return model, node.name


def _drop(name):
    def edit(node):
        keep = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(keep)
    return edit


def _set(name, value):
    def edit(node):
        _drop(name)(node)
        node.attribute.append(helper.make_attribute(name, value))
    return edit


def test_an_exported_file_optimizes(exported):
    _, path = exported("linear-tiny")
    optimize_model(onnx.load(path), "ort")


def test_a_removed_causal_attribute_is_refused_not_defaulted(exported, tmp_path, capsys):
    _, path = exported("linear-tiny")
    model, name = _edited(path, _drop("causal"))
    with pytest.raises(OnnxFileError) as err:
        optimize_model(model, "ort")
    message = str(err.value)
    assert f"node {name!r} (LinearAttention)" in message
    assert "'causal' missing" in message and "its function overload says causal=1" in message
    assert "causal=0" in message  # the default it would have filled in
    src, out = tmp_path / "edited.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    assert main(["optimize", str(src), "-o", str(out)]) == 2
    assert not out.exists()
    assert "'causal' missing" in capsys.readouterr().err


def test_an_attribute_disagreeing_with_the_function_is_refused(exported):
    _, path = exported("linear-tiny")
    model, name = _edited(path, _set("causal", 0))
    with pytest.raises(OnnxFileError, match=f"node '{name}' .*the node says causal=0, its function overload "
                                            "says causal=1"):
        optimize_model(model, "ort")


def test_an_invalid_attribute_value_is_refused(exported):
    _, path = exported("linear-tiny")
    model, name = _edited(path, _set("feature_map", "tanh"))
    with pytest.raises(OnnxFileError, match=f"node '{name}'.*'feature_map' = 'tanh' is not allowed"):
        optimize_model(model, "ort")


def test_an_unknown_attribute_is_refused(exported):
    _, path = exported("linear-tiny")
    model, name = _edited(path, _set("window", 4))
    with pytest.raises(OnnxFileError, match=f"node '{name}'.*no attribute 'window'"):
        optimize_model(model, "ort")


def test_a_string_attribute_that_is_not_utf8_is_refused(exported):
    _, path = exported("linear-tiny")
    model, name = _edited(path, _set("feature_map", b"\xff\xfe"))
    with pytest.raises(OnnxFileError, match=f"node '{name}' \\(LinearAttention\\): attribute 'feature_map' .* is "
                                            "not UTF-8"):
        optimize_model(model, "ort")


def test_an_overload_that_is_no_specialisation_is_refused(exported):
    _, path = exported("linear-tiny")
    model, name = _edited(path, lambda node: setattr(node, "overload", "causal=1"))
    with pytest.raises(OnnxFileError, match=f"node '{name}'.*'causal=1', which is not a LinearAttention "
                                            "specialisation"):
        optimize_model(model, "ort")


def test_without_an_overload_every_attribute_must_still_be_written(exported):
    _, path = exported("linear-tiny")

    def edit(node):
        node.overload = ""
        _drop("eps")(node)

    model, _ = _edited(path, edit)
    with pytest.raises(OnnxFileError, match="'eps' missing: expected every LinearAttention attribute"):
        optimize_model(model, "ort")


def test_retarget_refuses_a_node_it_would_have_to_complete(exported):
    _, path = exported("linear-tiny")
    model, _ = _edited(path, _drop("causal"))
    with pytest.raises(OnnxFileError, match="'causal' missing"):
        retarget(model, "trt")
