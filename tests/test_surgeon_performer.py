"""Performer's FAVOR+ → PerformerFeatures feeding LinearAttention(identity); look-alikes left alone."""

import math

import pytest
import torch

from attnx.ops.performer_features import reference as favor_reference
from attnx.surgeon import optimize_model
from test_surgeon_fuse import attrs_of
from test_surgeon_models import QKV, QKV_AXES, PerformerAttention, assert_same_outputs, export

M = 16


def projection(d=8, m=M, seed=0):
    """Blocks of orthogonal rows, rescaled to chi-distributed norms (the paper's W)."""
    g = torch.Generator().manual_seed(seed)
    blocks = [torch.linalg.qr(torch.randn(d, d, generator=g))[0].T for _ in range(math.ceil(m / d))]
    return torch.cat(blocks)[:m] * torch.randn(m, d, generator=g).norm(dim=1, keepdim=True)


class SoftmaxKernelPerformer(torch.nn.Module):
    """FAVOR+ spelled as performer-style code writes it: the normaliser applied to x and to ‖x‖²
    separately, W as a [D, M] MatMul, ratio·(exp(·) + eps); non-causal or causal (cumsum)."""

    def __init__(self, causal=False, half_norm=True, key_offset=None):
        super().__init__()
        self.causal, self.half_norm, self.key_offset = causal, half_norm, key_offset
        self.register_buffer("wt", projection().T.contiguous())

    def features(self, x, is_query):
        normalizer = x.shape[-1] ** -0.25
        wx = (x * normalizer) @ self.wt
        diag = (x ** 2).sum(-1, keepdim=True) / 2.0 * normalizer ** 2 if self.half_norm else 0.0
        stab = wx.amax(-1, keepdim=True) if is_query else wx.amax(dim=(-1, -2), keepdim=True)
        if not is_query and self.key_offset is not None:
            stab = self.key_offset  # causal-safe: one data-independent constant for every key
        return M ** -0.5 * (torch.exp(wx - diag - stab) + 1e-4)

    def forward(self, q, k, v):
        q, k = self.features(q, True), self.features(k, False)
        if self.causal:
            kv = torch.einsum("bhnm,bhne->bhnme", k, v).cumsum(2)
            y = torch.einsum("bhnm,bhnme->bhne", q, kv)
            return y / torch.einsum("bhnm,bhnm->bhn", q, k.cumsum(2)).unsqueeze(-1)
        kv = torch.einsum("bhnm,bhne->bhme", k, v)
        return torch.einsum("bhnm,bhme->bhne", q, kv) / (q @ k.sum(2, keepdim=True).transpose(-1, -2))


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
