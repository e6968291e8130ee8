"""Reassociation on plain-torch exports: (QKᵀ)V → Q(KᵀV) where it is exact, nothing where it is not."""

import pytest

from attnx.surgeon import optimize_model
from helpers.graphs import EXPORT_LEN, QKV, QKV_AXES, assert_same_outputs, export
from helpers.attention_models import (EinsumLinearAttention, ExpBetweenProducts, GAU,
                                      LengthNormalisedAttention, MaskedCausalLinearAttention,
                                      PerformerAttention, SoftmaxBetweenProducts)


def optimize(model, passes=None):
    out, reports = optimize_model(model, "ort", passes)
    return out, {r.name: r for r in reports}


def ops(model):
    return [f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph.node]


def test_einsum_linear_attention_becomes_q_times_kv_in_standard_ops(rng):
    model = export(EinsumLinearAttention(), QKV, QKV_AXES)
    out, reports = optimize(model, ["reassociate"])
    detail = reports["reassociate"].details[0]
    assert detail["rewritten"], detail
    assert "row sum → q·Σk" in detail["change"]
    assert all(n.domain == "" for n in out.graph.node)
    assert "Einsum" not in ops(out)  # both products now MatMuls over [d, e] states
    assert_same_outputs(model, out, QKV, QKV_AXES, rng)


def test_a_dynamic_length_scale_moves_onto_q_in_another_layout(rng):
    shapes, axes = [(2, EXPORT_LEN, 2, 8)] * 3, (1, 1, 1)
    model = export(LengthNormalisedAttention(), shapes, axes)
    out, reports = optimize(model, ["reassociate"])
    detail = reports["reassociate"].details[0]
    assert detail["rewritten"] and "1 scale(s) moved onto q" in detail["change"], detail
    assert_same_outputs(model, out, shapes, axes, rng)


def test_causal_mask_turns_the_match_into_causal_linear_attention(rng):
    model = export(MaskedCausalLinearAttention(), QKV, QKV_AXES)
    out, reports = optimize(model, ["reassociate"])
    detail = reports["reassociate"].details[0]
    assert detail["rewritten"] and detail["checks"]["mask_is_causal"], detail
    (node,) = [n for n in out.graph.node if n.domain == "attnx"]
    attrs = {a.name: a for a in node.attribute}
    assert node.op_type == "LinearAttention" and attrs["causal"].i == 1
    assert attrs["feature_map"].s == b"identity"  # a scale sits between φ and the product
    assert_same_outputs(model, out, QKV, QKV_AXES, rng)


def test_performer_features_reassociate_and_fuse_as_identity_feature_map(rng):
    model = export(PerformerAttention(), QKV, QKV_AXES)
    out, reports = optimize(model)
    assert reports["reassociate"].rewritten == 1
    assert reports["fuse-linear-attention"].rewritten == 1
    assert reports["fuse-performer-features"].rewritten == 2  # test_surgeon_performer.py says more
    (node,) = [n for n in out.graph.node if n.op_type == "LinearAttention"]
    assert {a.name: a.s for a in node.attribute}["feature_map"] == b"identity"
    assert_same_outputs(model, out, QKV, QKV_AXES, rng)


@pytest.mark.parametrize("module, check, why", [
    (SoftmaxBetweenProducts(), "softmax_free", "Softmax"),
    (ExpBetweenProducts(), "steps_commute", "Exp"),
    (GAU(), "steps_commute", "Relu"),
])
def test_look_alikes_are_left_alone_and_the_report_says_why(module, check, why):
    shapes, axes = (QKV, QKV_AXES) if not isinstance(module, GAU) else ([(2, EXPORT_LEN, 8)] * 3, (1, 1, 1))
    model = export(module, shapes, axes)
    out, reports = optimize(model, ["reassociate"])
    report = reports["reassociate"]
    assert (report.matched, report.rewritten) == (1, 0)
    detail = report.details[0]
    assert detail["checks"][check] is False and detail["why"].startswith(check) and why in detail["why"], detail
    assert sorted(ops(out)) == sorted(ops(model))


def test_short_static_sequences_are_not_reassociated():
    model = export(EinsumLinearAttention(), [(2, 2, 4, 64)] * 3, ())  # N = 4 < d: (QKᵀ)V is cheaper
    _, reports = optimize(model, ["reassociate"])
    detail = reports["reassociate"].details[0]
    assert not detail["rewritten"] and detail["why"].startswith("reassociation_saves_flops"), detail
