"""What torch's exporters validly write is read, never a crash: empty constants, sequences, `If`, opset 17.

Real exports (tiny models, seeded weights): a plain-torch causal softmax attention and transformers' GPT-2
(eager attention) through the exporters and opsets where each exports; each goes the CLI's way
(validate_input_model, which converts opset 17, then optimize_model) without raising, and ONNX Runtime's
outputs after equal those before within 1e-4 relative (helpers.public.RTOL: float32 reordering of a few
thousand terms is ~1e-6, a wrong mask or scale 1e-2) at lengths 1 and 37.
Left out, for the 60 s budget: Llama, whose dynamo-raw export has the same empty Constant(value_ints=[])
as GPT-2's and takes 13 s; TorchScript cannot export transformers' Llama or GPT-2 at any opset
(aten::diff, in the mask builder, has no symbolic).
Hand-built graphs pin each valid form that crashed a pass before.
"""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from attnx.errors import AttnxError, OnnxFileError
from attnx.surgeon.evaluate import values_at_lengths_why
from attnx.surgeon.graph import import_graph, validate_input_model
from attnx.surgeon.pipeline import optimize_model
from attnx.surgeon.upgrade import upgrade_opset
from helpers.public import assert_close_outputs, export_as

LENGTHS = (1, 37)


class CausalSoftmax(torch.nn.Module):
    """Plain-torch causal self-attention: 4 heads of 8, a boolean triu mask filled with −inf."""

    def __init__(self):
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(32, 96), torch.nn.Linear(32, 32)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / 8 ** 0.5
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)
        y = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, 32))


class LogitsOf(torch.nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(input_ids=ids, use_cache=False).logits


def _gpt2():
    transformers = pytest.importorskip("transformers", reason="transformers is in the test extra")
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=4, n_positions=512,
                                     attn_implementation="eager")
    return LogitsOf(transformers.GPT2LMHeadModel(config))


CASES = {  # name: (build, exporter, opset)
    "causal-torchscript-17": (CausalSoftmax, "torchscript", 17),
    "causal-torchscript-23": (CausalSoftmax, "torchscript", 23),
    "gpt2-dynamo-raw-23": (_gpt2, "dynamo-raw", 23),  # an empty Constant(value_ints=[]) and a SplitToSequence
}


def _inputs(name, n, seed=0):
    g = torch.Generator().manual_seed(seed + n)
    if name.startswith("gpt2"):
        return [torch.randint(0, 64, (1, n), generator=g)]
    return [torch.randn(1, n, 32, generator=g)]


@pytest.fixture(scope="module")
def exported():
    cache = {}

    def get(name):
        if name not in cache:
            build, exporter, opset = CASES[name]
            torch.manual_seed(0)
            cache[name] = export_as(build(), _inputs(name, 12), exporter, opset, {0: {1: "n"}})
        return cache[name]

    return get


@pytest.mark.parametrize("name", CASES)
def test_exporter_output_is_optimized_without_a_crash_and_keeps_its_outputs(name, exported):
    model = exported(name)
    read = onnx.ModelProto()
    read.CopyFrom(model)
    note = validate_input_model(read, name)
    if CASES[name][2] < 18:
        assert note is not None and note.startswith("converted from opset 17 to opset"), note
    try:
        out, reports = optimize_model(read)
    except AttnxError as exc:  # allowed by the contract only with its reason; none of these is refused
        pytest.fail(f"optimize_model refused {name}: {exc}")
    assert reports and all(d.get("why") or d.get("rewritten") for r in reports for d in r.details)
    feeds = [{"x0": t.numpy()} for t in (_inputs(name, n, seed=1)[0] for n in LENGTHS)]
    assert_close_outputs(model, out, feeds)


def _model(nodes, inputs, outputs, opset=23, value_info=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, value_info=list(value_info))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _x(shape=("n", 4)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def test_an_empty_constant_list_is_read_as_an_empty_tensor():
    empty = helper.make_node("Constant", [], ["e"])
    empty.attribute.append(onnx.AttributeProto(name="value_ints", type=onnx.AttributeProto.INTS))
    model = _model([empty,
                    helper.make_node("Shape", ["x"], ["s"]),
                    helper.make_node("Concat", ["s", "e"], ["t"], axis=0),
                    helper.make_node("Reshape", ["x", "t"], ["y"])],
                   [_x()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    out, _ = optimize_model(model)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert_close_outputs(model, out, [{"x": x}])
    constants = [n for n in out.graph.node if n.op_type == "Constant"]
    assert all(a.name != "value_ints" for n in constants for a in n.attribute)


def test_a_sequence_value_is_evaluated_not_typed_as_a_tensor():
    seq = helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)
    model = _model([helper.make_node("SplitToSequence", ["x"], ["parts"], axis=0, keepdims=1),
                    helper.make_node("Constant", [], ["i"], value=helper.make_tensor("i", TensorProto.INT64, [], [1])),
                    helper.make_node("SequenceAt", ["parts", "i"], ["y"])],
                   [_x((4, "n"))], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "n"])], value_info=[seq])
    model = onnx.shape_inference.infer_shapes(model)
    graph = import_graph(model)
    values, why = values_at_lengths_why(graph, graph.outputs[0], (2, 5))
    assert why == "" and [v.shape for v in values] == [(1, 2), (1, 5)]
    out, _ = optimize_model(model)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert_close_outputs(model, out, [{"x": x}])


def test_an_if_with_a_constant_condition_passes_through():
    branch = lambda op: helper.make_graph([helper.make_node(op, ["x"], ["b"])], op, [],  # noqa: E731
                                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    model = _model([helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [1])),
                    helper.make_node("If", ["c"], ["y"], then_branch=branch("Relu"), else_branch=branch("Neg"))],
                   [_x()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    out, _ = optimize_model(model)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert_close_outputs(model, out, [{"x": x}])


def test_opset_17_is_converted_and_older_refused_saying_so():
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])]
    model = _model(relu, [_x()], out, opset=17)
    note = validate_input_model(model, "m.onnx")
    assert note.startswith("converted from opset 17 to opset 23") and "ONNX Runtime" in note
    assert [i.version for i in model.opset_import if i.domain == ""] == [23]
    with pytest.raises(OnnxFileError, match=r"expected default opset 18 or later .*converts 17.*found opset 16"):
        validate_input_model(_model(relu, [_x()], out, opset=16), "m.onnx")
    current = _model(relu, [_x()], out, opset=23)
    assert upgrade_opset(current) == (current, None)


def test_an_opset_17_model_the_converter_cannot_take_is_refused_with_what_it_said():
    # a node output name used twice is invalid, so the converter's checker refuses it
    bad = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])],
                 [_x()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], opset=17)
    with pytest.raises(OnnxFileError, match=r"converts from opset 17 to 23 .*found that it fails: \S"):
        upgrade_opset(bad)
