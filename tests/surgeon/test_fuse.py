"""Fusion into attnx ops and ONNX Attention, on plain-torch exports and on x-transformers."""

import pytest
import torch

from attnx.surgeon import optimize_model
from helpers.graphs import EXPORT_LEN, QKV, QKV_AXES, assert_same_outputs, attrs_of, export, only_node
from helpers.attention_models import (CausalSoftmaxAttention, CumsumCausalLinearAttention,
                                      EinsumLinearAttention, LocalWindowAttention)


def optimize(model, passes=None):
    out, reports = optimize_model(model, "ort", passes)
    return out, {r.name: r for r in reports}


def test_quadratic_linear_attention_ends_as_one_linear_attention_node_with_its_feature_map(rng):
    model = export(EinsumLinearAttention(), QKV, QKV_AXES)
    out, reports = optimize(model)
    assert reports["fuse-linear-attention"].rewritten == 1
    assert len(out.graph.node) == 1  # Elu+1 absorbed: the node takes the raw q, k
    attrs = attrs_of(only_node(out, "attnx", "LinearAttention"))
    assert (attrs["causal"], attrs["feature_map"], attrs["normalize"]) == (0, "elu", 1)
    assert attrs["eps"] == pytest.approx(1e-6)
    assert_same_outputs(model, out, QKV, QKV_AXES, rng)


def test_cumsum_causal_linear_attention_becomes_causal_linear_attention(rng):
    model = export(CumsumCausalLinearAttention(), QKV, QKV_AXES)
    out, reports = optimize(model)
    assert "causal CumSum form" in reports["fuse-linear-attention"].details[0]["change"]
    attrs = attrs_of(only_node(out, "attnx", "LinearAttention"))
    assert (attrs["causal"], attrs["feature_map"], attrs["normalize"]) == (1, "elu", 1)
    # lengths past the node's chunk (64) exercise its chunked causal body
    assert_same_outputs(model, out, QKV, QKV_AXES, rng, lengths=(1, 37, 130))


def test_causal_softmax_attention_becomes_onnx_attention(rng):
    model = export(CausalSoftmaxAttention(), QKV, QKV_AXES, opset=23)
    out, reports = optimize(model)
    attrs = attrs_of(only_node(out, "", "Attention"))
    assert attrs["is_causal"] == 1 and attrs["scale"] == pytest.approx(8 ** -0.5)
    assert reports["reassociate"].matched == 0  # claimed by the softmax fusion first
    assert_same_outputs(model, out, QKV, QKV_AXES, rng)


def test_softmax_fusion_needs_opset_23_and_says_so(monkeypatch):
    model = export(CausalSoftmaxAttention(), QKV, QKV_AXES, opset=18)
    # where ONNX Runtime runs opset 23 the file is converted and fused (test_guard.py); without it, reported
    monkeypatch.setattr("attnx.surgeon.upgrade.runtime_runs_opset", lambda opset=23: False)
    out, reports = optimize(model, ["fuse-softmax-attention"])
    detail = reports["fuse-softmax-attention"].details[0]
    assert not detail["rewritten"] and "opset is 18" in detail["why"], detail
    assert not any(n.op_type == "Attention" for n in out.graph.node)


def test_local_window_softmax_becomes_sparse_attention_not_causal_attention(rng):
    model = export(LocalWindowAttention(), QKV, QKV_AXES, opset=23)
    out, reports = optimize(model)
    assert reports["fuse-sparse-attention"].rewritten == 1
    assert reports["fuse-softmax-attention"].matched == 0  # claimed by the specific pass first
    attrs = attrs_of(only_node(out, "attnx", "SparseAttention"))
    assert (attrs["pattern"], attrs["window"], attrs["causal"]) == ("local", 2, 0)
    assert attrs["scale"] == pytest.approx(8 ** -0.5)
    assert not any(n.op_type == "Attention" for n in out.graph.node)
    assert_same_outputs(model, out, QKV, QKV_AXES, rng)


def test_band_mask_with_softmax_fusion_alone_is_not_taken_for_causal_attention():
    model = export(LocalWindowAttention(), QKV, QKV_AXES, opset=23)
    out, reports = optimize(model, ["fuse-softmax-attention", "reassociate"])
    detail = reports["fuse-softmax-attention"].details[0]
    assert not detail["rewritten"] and detail["why"].startswith("mask_is_causal"), detail
    assert reports["reassociate"].details[0]["why"].startswith("softmax_free")
    assert not any(n.op_type == "Attention" for n in out.graph.node)


@pytest.mark.parametrize("causal", [False, True])
def test_x_transformers_attention_fuses_into_onnx_attention(causal, rng):
    x_transformers = pytest.importorskip("x_transformers", reason="x-transformers is in the test extra")
    torch.manual_seed(0)
    module = (x_transformers.Decoder if causal else x_transformers.Encoder)(dim=16, depth=1, heads=2, attn_dim_head=8)
    shapes, axes = [(2, EXPORT_LEN, 16)], (1,)
    model = export(module, shapes, axes, opset=23)
    out, reports = optimize(model)
    assert reports["fuse-softmax-attention"].rewritten == 1
    assert attrs_of(only_node(out, "", "Attention"))["is_causal"] == int(causal)
    assert not any(n.op_type == "Softmax" for n in out.graph.node)
    assert_same_outputs(model, out, shapes, axes, rng)
