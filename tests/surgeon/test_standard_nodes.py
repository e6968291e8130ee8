"""attnx.surgeon.standard_nodes: a file holding ONNX Attention/RotaryEmbedding is run at batch 1 and 2
and at a length other than the export's, and the input's own failures are told from the written
file's.

The graphs are written by hand (an Attention node behind a Reshape whose target is a constant: the
length baked in, as an exporter does when it specialises a size), plus one real dynamo export of
torch.nn.MultiheadAttention. Tolerance: standard_nodes.RTOL (1e-4 relative to the output's largest
value; float32 reordering is ~1e-6, a wrong rewrite 1e-2 or more).
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from attnx.surgeon.standard_nodes import (OTHER_LEN, RTOL, check_standard_nodes, ort_opset_support,
                                          standard_nodes)

D, HEADS = 8, 2


def _attention_model(*, baked_len=None, scale=None, dims=("b", "n")):
    """x [b, n, D] → Attention(x, x, x) (3-D, HEADS heads); `baked_len`: x goes through Reshape to
    [1, baked_len, D] first (a constant target: fails at any other batch or length)."""
    nodes, inits, src = [], [], "x"
    if baked_len is not None:
        inits.append(numpy_helper.from_array(np.array([1, baked_len, D], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["x", "shape"], ["xr"]))
        src = "xr"
    attrs = {"q_num_heads": HEADS, "kv_num_heads": HEADS}
    if scale is not None:
        attrs["scale"] = scale
    nodes.append(helper.make_node("Attention", [src, src, src], ["y"], **attrs))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*dims, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def test_a_file_without_standard_nodes_is_not_checked():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n", D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "n", D])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    assert standard_nodes(model) == {}
    assert check_standard_nodes(model, model) is None


def test_dynamic_file_runs_at_batch_2_and_another_length():
    model = _attention_model()
    result = check_standard_nodes(model, model, export_len=12)
    assert standard_nodes(model) == {"Attention": 1}
    assert [(c.batch, c.seq_len) for c in result.cases] == [(1, 12), (2, 12), (1, OTHER_LEN)]
    assert result.status == "ok" and all(c.rel_diff == 0.0 for c in result.cases)


def test_a_length_baked_in_by_the_exporter_is_the_inputs_failure():
    model = _attention_model(baked_len=12)
    result = check_standard_nodes(model, model, export_len=12)
    failed = [(c.batch, c.seq_len) for c in result.input_fails]
    assert failed == [(2, 12), (1, OTHER_LEN)]  # runs at the export's own size only
    assert result.status == "input-fails" and not result.regressions  # the written file behaves the same
    text = "\n".join(result.lines())
    assert f"the INPUT itself fails at batch 1, length {OTHER_LEN} (the written file fails there too)" in text
    assert result.to_json()["status"] == "input-fails"


def test_a_written_file_that_fails_where_the_input_runs_is_a_regression():
    result = check_standard_nodes(_attention_model(), _attention_model(baked_len=12), export_len=12)
    assert result.status == "regression"
    assert [(c.batch, c.seq_len) for c in result.regressions] == [(2, 12), (1, OTHER_LEN)]
    assert "fails where the input runs" in result.regressions[0].regression


def test_a_written_file_with_other_outputs_is_a_regression():
    # another scale: the same shapes, other numbers (0.9 against the default 1/sqrt(D/HEADS) = 0.5)
    result = check_standard_nodes(_attention_model(), _attention_model(scale=0.9), export_len=12)
    assert result.status == "regression"
    assert all(c.rel_diff > RTOL for c in result.cases)


def test_a_static_batch_is_said_not_checked():
    model = _attention_model(dims=(1, "n"))
    result = check_standard_nodes(model, model)  # export length not recorded: 16 and 37
    assert [(c.batch, c.seq_len) for c in result.cases] == [(1, 16), (1, OTHER_LEN)]
    assert any("axis 0 is static" in n for n in result.notes)
    assert any("not recorded" in n for n in result.notes)


def test_ort_opset_support_answers_for_23_and_refuses_an_undefined_opset():
    ok, said = ort_opset_support(23)
    assert ok and "runs opset 23 with Attention and RotaryEmbedding" in said
    ok, said = ort_opset_support(99)
    assert not ok and "does not run opset 99" in said


@pytest.fixture(scope="module")
def mha_export():
    import torch

    from helpers.public import export_as

    torch.manual_seed(0)

    class MHA(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            return self.a(x, x, x, need_weights=False)[0]

    return export_as(MHA(), (torch.randn(2, 9, 16),), "dynamo", 23, {0: {0: "b", 1: "n"}})


def test_real_multihead_attention_export_and_its_optimized_file_agree(mha_export):
    from attnx.surgeon.pipeline import optimize_model

    assert standard_nodes(mha_export).get("Attention") == 1
    optimized, _ = optimize_model(mha_export, "ort")
    result = check_standard_nodes(mha_export, optimized, export_len=9)
    assert [(c.batch, c.seq_len) for c in result.cases] == [(1, 9), (2, 9), (1, OTHER_LEN)]
    assert result.status == "ok", result.lines()
