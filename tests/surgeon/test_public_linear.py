"""Linear attention as public code and plain torch write it → attnx LinearAttention.

linear-attention-transformer 0.19.1 (its non-causal `linear_attn` inside a tiny
LinearAttentionTransformer; its causal `causal_linear_attn` is a look-alike: the denominator is
clamped, max(q·z, 1e-3), not q·z + eps, and the state is kept per bucket), and plain-torch modules:
causal and non-causal, elu+1 and relu feature maps, the outer product spelled
`k.unsqueeze(-1) * v.unsqueeze(-2)` with `(q.unsqueeze(-1) * kv).sum(-2)`, the einsum spelling,
and the key sum bucketed (chunk sums' prefix plus an in-chunk CumSum, padding sliced off).
Tolerance: ORT outputs within 1e-4 relative (public.RTOL: float32 reordering of sums; a wrong
normaliser or feature map moves outputs by 1e-2 or more), at lengths 1, 37 and 300, batch 2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnx.surgeon.pipeline import optimize_model
from tests.helpers.public import assert_close_outputs, export_as, ops_of

LENGTHS = (1, 37, 300)
AXES = {0: "b", 2: "n"}
PHI = {"elu": lambda x: F.elu(x) + 1, "relu": F.relu}


def _count(model, op):
    return sum(1 for _, o in ops_of(model) if o == op)


def _details(reports, name="fuse-linear-attention"):
    return next(r for r in reports if r.name == name).details


def _qkv_feeds(seed=0, d=8):
    rng = np.random.default_rng(seed)
    return [{f"x{i}": rng.standard_normal((2, 2, n, d)).astype(np.float32) for i in range(3)} for n in LENGTHS]


def _export(module, exporter="torchscript"):
    # TorchScript exports in a tenth of a second; one case per spelling also goes through dynamo
    torch.manual_seed(0)
    return export_as(module, [torch.randn(2, 2, 37, 8) for _ in range(3)], exporter,
                     23 if exporter.startswith("dynamo") else 17, {0: AXES, 1: AXES, 2: AXES})


class OuterProduct(torch.nn.Module):
    """Causal linear attention with the outer product written as broadcast Mul + sum."""

    def __init__(self, fm="elu", causal=True, z_axis=2, q_fm=None):
        super().__init__()
        self.fm, self.causal, self.z_axis, self.q_fm = fm, causal, z_axis, q_fm or fm

    def forward(self, q, k, v):
        q, k = PHI[self.q_fm](q), PHI[self.fm](k)
        kv = k.unsqueeze(-1) * v.unsqueeze(-2)
        if self.causal:
            kv, z = torch.cumsum(kv, dim=2), torch.cumsum(k, dim=self.z_axis)
            y = (q.unsqueeze(-1) * kv).sum(-2)
            den = (q * z).sum(-1)
        else:
            y = (q.unsqueeze(-1) * kv.sum(2, keepdim=True)).sum(-2)
            den = (q * k.sum(2, keepdim=True)).sum(-1)
        return y / (den.unsqueeze(-1) + 1e-6)


class EinsumSpelling(torch.nn.Module):
    def __init__(self, fm="relu", causal=False):
        super().__init__()
        self.fm, self.causal = fm, causal

    def forward(self, q, k, v):
        q, k = PHI[self.fm](q), PHI[self.fm](k)
        if self.causal:
            kv = torch.cumsum(torch.einsum("bhnd,bhne->bhnde", k, v), dim=2)
            return torch.einsum("bhnd,bhnde->bhne", q, kv) / (
                torch.einsum("bhnd,bhnd->bhn", q, k.cumsum(2)).unsqueeze(-1) + 1e-6)
        kv = torch.einsum("bhnd,bhne->bhde", k, v)
        return torch.einsum("bhnd,bhde->bhne", q, kv) / (
            torch.einsum("bhnd,bhd->bhn", q, k.sum(2)).unsqueeze(-1) + 1e-6)


class BucketedKeySum(torch.nn.Module):
    """Causal, with the key sum computed per bucket: earlier buckets' sums plus an in-bucket CumSum."""

    def __init__(self, bucket=16, drop_own_bucket=False):
        super().__init__()
        self.bucket, self.drop_own_bucket = bucket, drop_own_bucket

    def forward(self, q, k, v):
        q, k = F.elu(q) + 1, F.elu(k) + 1
        kv = torch.cumsum(torch.einsum("bhnd,bhne->bhnde", k, v), dim=2)
        num = torch.einsum("bhnd,bhnde->bhne", q, kv)
        b, h, n, d = k.shape
        kb = F.pad(k, (0, 0, 0, (-n) % self.bucket)).reshape(b, h, -1, self.bucket, d)
        sums = kb.sum(3)
        before = sums.cumsum(2) - sums
        within = kb.cumsum(3) if not self.drop_own_bucket else torch.zeros_like(kb)
        z = (within + before.unsqueeze(3)).reshape(b, h, -1, d)[:, :, :n]
        return num / (torch.einsum("bhnd,bhnd->bhn", q, z).unsqueeze(-1) + 1e-6)


FUSED = {
    "outer-causal-elu": (OuterProduct("elu"), "causal=True, feature_map=elu, normalize=True"),
    "outer-causal-relu": (OuterProduct("relu"), "causal=True, feature_map=relu, normalize=True"),
    "einsum-causal-elu": (EinsumSpelling("elu", causal=True), "causal=True, feature_map=elu, normalize=True"),
    "einsum-relu": (EinsumSpelling("relu"), "causal=False, feature_map=relu, normalize=True"),
    "bucketed-key-sum": (BucketedKeySum(), "causal=True, feature_map=elu, normalize=True"),
}


@pytest.mark.parametrize("name,exporter", [(name, "torchscript") for name in FUSED] +
                         [("outer-causal-elu", "dynamo")])
def test_plain_module_fuses(name, exporter):
    module, attrs = FUSED[name]
    model = _export(module, exporter)
    out, reports = optimize_model(model)
    details = [d for d in _details(reports) if d["rewritten"]]
    assert len(details) == 1 and attrs in details[0]["change"], _details(reports)
    assert _count(out, "LinearAttention") == 1 and _count(out, "CumSum") == 0, ops_of(out)
    assert_close_outputs(model, out, _qkv_feeds())
    optimize_model(model, target="trt")


LOOK_ALIKES = {
    # the normaliser's key sum is a CumSum over the feature axis, not the tokens
    "wrong-normaliser-axis": (OuterProduct("elu", z_axis=3), "normaliser_matches"),
    # elu+1 on q, relu on k: no shared feature map, and q·z is then no key sum of these features
    "feature-map-differs": (OuterProduct("relu", q_fm="elu"), None),
    # the key sum misses the keys of the query's own bucket
    "bucketed-without-own-bucket": (BucketedKeySum(drop_own_bucket=True), "differs from the inclusive prefix"),
}


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_look_alike_left_alone_or_exact(name):
    module, why = LOOK_ALIKES[name]
    model = _export(module)
    out, reports = optimize_model(model)
    details = _details(reports)
    assert details, "the candidate must be reported"
    if why is None:
        # the feature maps are not absorbed: LinearAttention(identity) on the features is exact
        # where fused; either way the outputs must not move
        assert all(d["rewritten"] is False or "feature_map=identity" in d["change"] for d in details), details
    else:
        assert any(not d["rewritten"] and why in d["why"] for d in details), details
    assert_close_outputs(model, out, _qkv_feeds(1))


@pytest.fixture(scope="module")
def lat():
    lat = pytest.importorskip("linear_attention_transformer")
    models = {}
    for causal in (False, True):
        torch.manual_seed(0)
        module = lat.LinearAttentionTransformer(dim=32, heads=2, depth=1, max_seq_len=512, causal=causal,
                                                n_local_attn_heads=0)
        # causal_linear_attn asserts the length is a multiple of its bucket: exported at one length
        models[causal] = export_as(module, [torch.randn(2, 64 if causal else 37, 32)], "torchscript", 17,
                                   {0: {0: "b"} if causal else {0: "b", 1: "n"}})
    return models


def test_linear_attention_transformer_fuses(lat):
    model = lat[False]
    out, reports = optimize_model(model)
    details = _details(reports)
    assert [d["rewritten"] for d in details] == [True], details
    assert "feature_map=identity, normalize=False" in details[0]["change"]
    assert _count(out, "LinearAttention") == 1 and _count(out, "Einsum") == 0
    rng = np.random.default_rng(2)
    assert_close_outputs(model, out, [{"x0": rng.standard_normal((2, n, 32)).astype(np.float32)} for n in LENGTHS])
    optimize_model(model, target="trt")


def test_linear_attention_transformer_causal_is_explained(lat):
    out, reports = optimize_model(lat[True])
    details = _details(reports)
    assert len(details) == 1 and not details[0]["rewritten"], details
    assert details[0]["why"].startswith("state_read_by_one_product"), details
    assert _count(out, "LinearAttention") == 0
