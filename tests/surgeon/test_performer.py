"""Performer's FAVOR+ → PerformerFeatures feeding LinearAttention(identity); look-alikes left alone."""


import pytest
import torch

from attnx.ops.performer_features import reference as favor_reference
from attnx.surgeon import optimize_model
from helpers.graphs import QKV, QKV_AXES, assert_same_outputs, attrs_of, export
from helpers.attention_models import M, PerformerAttention, SoftmaxKernelPerformer


def optimize(model, target="ort"):
    out, reports = optimize_model(model, target)
    return out, {r.name: r for r in reports}


def test_module_features_are_the_spec_reference_with_eps_over_root_m(rng):
    x = torch.randn(2, 2, 11, 8, generator=rng, dtype=torch.float64)
    module = SoftmaxKernelPerformer().double()
    for kind in ("query", "key"):
        want = favor_reference(x, module.wt.T, kind=kind, eps=1e-4 / M ** 0.5, offset=0.0)[0]
        torch.testing.assert_close(module.features(x, kind == "query"), want)


@pytest.mark.parametrize("module", [PerformerAttention(), SoftmaxKernelPerformer(), SoftmaxKernelPerformer(True)],
                         ids=["quadratic", "linear", "causal-cumsum"])
def test_favor_plus_becomes_performer_features_into_identity_linear_attention(module, rng):
    model = export(module, QKV, QKV_AXES)
    out, reports = optimize(model)
    assert reports["fuse-performer-features"].rewritten == 2, reports["fuse-performer-features"].details
    features = [attrs_of(n) for n in out.graph.node if n.op_type == "PerformerFeatures"]
    assert sorted(a["kind"] for a in features) == ["key", "query"]
    assert all(a["eps"] == pytest.approx(1e-4 / M ** 0.5, rel=1e-3) for a in features)
    (linear,) = [attrs_of(n) for n in out.graph.node if n.op_type == "LinearAttention"]
    causal = isinstance(module, SoftmaxKernelPerformer) and module.causal
    assert (linear["feature_map"], linear["causal"]) == ("identity", int(causal))
    assert not any(n.op_type == "Exp" for n in out.graph.node)
    assert_same_outputs(model, out, QKV, QKV_AXES, rng, lengths=(1, 7, 37, 100))


def test_constant_key_stabiliser_is_key_fixed_with_its_offset(rng):
    model = export(SoftmaxKernelPerformer(causal=True, key_offset=2.0), QKV, QKV_AXES)
    out, reports = optimize(model)
    assert reports["fuse-performer-features"].rewritten == 2, reports["fuse-performer-features"].details
    (key,) = [attrs_of(n) for n in out.graph.node if n.op_type == "PerformerFeatures" and attrs_of(n)["kind"] != "query"]
    assert key["kind"] == "key_fixed" and key["offset"] == pytest.approx(2.0, rel=1e-5)
    assert_same_outputs(model, out, QKV, QKV_AXES, rng)


def test_random_features_without_the_half_norm_are_left_alone():
    model = export(SoftmaxKernelPerformer(half_norm=False), QKV, QKV_AXES)
    _, reports = optimize(model)
    details = reports["fuse-performer-features"].details
    assert len(details) == 2 and not any(d["rewritten"] for d in details)
    assert all(d["why"].startswith("features_match_favor_plus") for d in details), details


def test_trt_form_of_performer_is_plugins_only():
    out, _ = optimize(export(SoftmaxKernelPerformer(True), QKV, QKV_AXES), "trt")
    assert {n.domain for n in out.graph.node} <= {"", "trt.plugins"}
    assert sorted(n.op_type for n in out.graph.node if n.domain) == ["LinearAttention", "PerformerFeatures",
                                                                     "PerformerFeatures"]
