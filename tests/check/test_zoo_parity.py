"""The attention zoo end to end: export once, ONNX Runtime against the eager model in float64 at
lengths 1, 37, 300 and 1024 (none a multiple of a chunk, window or block except 1024), the
fp32 tolerance of attnx.check.tolerances; and no N×N tensor in the sparse models' graphs."""

import numpy as np
import onnx
import onnx.inliner
import pytest
from onnx import helper

from attnx.check import TOLERANCES, check_parity
from helpers.onnx_node import inlined_intermediate_shapes

LM_MODELS = ("performer-tiny", "gau-tiny", "gau-n-tiny", "gau-softmax-tiny", "flash-tiny", "local-tiny", "dilated-tiny", "strided-tiny", "transnormer-tiny")
OPS = {"performer-tiny": {"PerformerFeatures", "LinearAttention"}, "gau-tiny": {"ReluSquaredAttention"}, "gau-n-tiny": {"ReluSquaredAttention"},
       "gau-softmax-tiny": set(),
       "flash-tiny": {"MixedChunkAttention"},
       "local-tiny": {"SparseAttention"}, "dilated-tiny": {"SparseAttention"}, "strided-tiny": {"SparseAttention"},
       "transnormer-tiny": {"SparseAttention", "LinearAttention"}}


@pytest.mark.parametrize("name", LM_MODELS)
def test_zoo_model_passes_parity_at_four_lengths(name, exported):
    loaded, path = exported(name)
    model = onnx.load(path)
    assert {n.op_type for n in model.graph.node if n.domain == "attnx"} == OPS[name]
    report = check_parity(path, loaded, seq_lens=(1, 37, 300, 1024))
    assert report.passed, report.to_text()
    assert all(o.max_abs_err <= TOLERANCES["fp32"].atol for o in report.outputs)


def test_performer_projection_is_an_initializer_feeding_both_feature_nodes(exported):
    _, path = exported("performer-tiny")
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "PerformerFeatures"]
    assert len(nodes) == 4 and all(n.input[1] in inits for n in nodes)
    assert list(inits[nodes[0].input[1]].dims) == [32, 16]
    kinds = [helper.get_attribute_value(a).decode() for n in nodes for a in n.attribute if a.name == "kind"]
    assert kinds == ["query", "key_fixed"] * 2  # causal: keys stabilised by a fixed constant, so they stream


@pytest.mark.parametrize("name", ("local-tiny", "dilated-tiny", "strided-tiny", "transnormer-tiny"))
def test_sparse_graph_has_no_n_by_n_tensor(name, exported):
    """Inline the functions, run at N = 2048 and look at every tensor ONNX Runtime produces."""
    _, path = exported(name)
    n = 2048
    shapes = inlined_intermediate_shapes(path, n)
    assert len(shapes) > 100
    assert not [s for s in shapes if list(s).count(n) >= 2], "an N×N tensor exists"
    # the largest tensor grows as N·w: N × (window keys ≤ 33) × head dim 16 × 4 heads
    assert max(np.prod(s) for s in shapes) <= n * 33 * 16 * 4
