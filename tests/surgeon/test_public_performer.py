"""FAVOR+ as performer-pytorch 1.1.4 writes it, exported with dynamo at opset 23 → PerformerFeatures.

performer-pytorch's `softmax_kernel` reaches the einsum with its projection through einops
`repeat(W, 'j d -> b h j d')` (an Expand of the constant) and adds eps after the exp:
`ratio * (exp(data_dash - diag_data - max) + eps)`, with a per-row max for queries (kind query)
and a max over keys and features per batch and head for keys (kind key). Both are exactly the
spec's features with eps·ratio. A look-alike whose key stabiliser is one max over the whole
tensor (every batch and head) agrees only after normalisation and is left alone with its reason.
Tolerance: ORT outputs within 1e-4 relative (public.RTOL: float32 reordering of sums, a wrong
stabiliser or eps moves outputs by 1e-2 or more).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnx.surgeon.pipeline import optimize_model
from tests.helpers.public import assert_close_outputs, export_as, ops_of

performer = pytest.importorskip("performer_pytorch")

LENGTHS = (1, 37, 300)


def _feeds(n_inputs, shape_of, seed=0):
    rng = np.random.default_rng(seed)
    return [{f"x{i}": rng.standard_normal(shape_of(n)).astype(np.float32) for i in range(n_inputs)}
            for n in LENGTHS]


def _details(reports, name):
    return next(r for r in reports if r.name == name).details


def _count(model, op):
    return sum(1 for _, o in ops_of(model) if o == op)


@pytest.fixture(scope="module")
def fast_attention():
    torch.manual_seed(0)
    module = performer.FastAttention(dim_heads=16, nb_features=16, causal=False)
    q, k, v = (torch.randn(2, 2, 37, 16) for _ in range(3))
    axes = {0: "b", 2: "n"}
    return export_as(module, [q, k, v], "dynamo", 23, {0: axes, 1: axes, 2: axes})


def test_fast_attention_features_fuse(fast_attention):
    assert _count(fast_attention, "Expand") == 1  # the einops repeat of the projection buffer
    out, reports = optimize_model(fast_attention)
    details = _details(reports, "fuse-performer-features")
    assert [d["rewritten"] for d in details] == [True, True], details
    kinds = sorted(d["change"].split("kind=")[1].split(",")[0] for d in details)
    assert kinds == ["key", "query"]
    assert all("eps=2.5e-05" in d["change"] for d in details)  # 1e-4 · 16^-½
    assert _count(out, "PerformerFeatures") == 2 and _count(out, "Exp") == 0
    assert_close_outputs(fast_attention, out, _feeds(3, lambda n: (2, 2, n, 16)))
    optimize_model(fast_attention, target="trt")  # the trt form is checked by onnx.checker


@pytest.mark.parametrize("exporter,opset", [("dynamo-raw", 23), ("torchscript", 17)])
def test_fast_attention_from_other_exporters_fuses_whole(exporter, opset):
    """The same FastAttention from optimize=False dynamo (W reaches the einsum through `.type_as`, a
    CastLike; the key sum too) and from TorchScript at opset 17 (D^-¼ computed from Shape(x); `1. / x`
    as Reciprocal times 1; the body's ReduceMax takes its axes as an attribute below opset 18)."""
    torch.manual_seed(0)
    module = performer.FastAttention(dim_heads=16, nb_features=16, causal=False)
    axes = {0: "b", 2: "n"}
    model = export_as(module, [torch.randn(2, 2, 37, 16) for _ in range(3)], exporter, opset,
                      {0: axes, 1: axes, 2: axes})
    out, reports = optimize_model(model)
    assert [d["rewritten"] for d in _details(reports, "fuse-performer-features")] == [True, True]
    assert [d["rewritten"] for d in _details(reports, "fuse-linear-attention")] == [True], \
        _details(reports, "fuse-linear-attention")
    assert _count(out, "PerformerFeatures") == 2 and _count(out, "LinearAttention") == 1
    assert _count(out, "Exp") == 0 and _count(out, "Einsum") == 0
    assert_close_outputs(model, out, _feeds(3, lambda n: (2, 2, n, 16)))
    trt, _ = optimize_model(model, target="trt")
    assert {n.domain for n in trt.graph.node} <= {"", "trt.plugins"}


def test_causal_fast_attention_features_fuse():
    # the causal form loops over 128 chunks in Python, so its export is static; at length 5 (chunks
    # of one token) the features are those of every length
    torch.manual_seed(1)
    module = performer.FastAttention(dim_heads=16, nb_features=16, causal=True)
    model = export_as(module, [torch.randn(2, 2, 5, 16) for _ in range(3)], "dynamo", 23)
    out, reports = optimize_model(model)
    details = _details(reports, "fuse-performer-features")
    assert [d["rewritten"] for d in details] == [True, True], details
    assert _count(out, "PerformerFeatures") == 2
    rng = np.random.default_rng(3)
    assert_close_outputs(model, out, [{f"x{i}": rng.standard_normal((2, 2, 5, 16)).astype(np.float32)
                                       for i in range(3)}])
    optimize_model(model, target="trt")


class GlobalMaxKeys(torch.nn.Module):
    """performer's softmax_kernel for keys, but stabilised by one max over the whole tensor."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.register_buffer("w", torch.randn(16, 16))

    def forward(self, x):
        xs = x * 16 ** -0.25
        dash = torch.einsum("...id,...jd->...ij", xs, self.w.expand(x.shape[0], x.shape[1], 16, 16))
        diag = (x ** 2).sum(-1, keepdim=True) / 2 * 16 ** -0.5
        return 16 ** -0.5 * (torch.exp(dash - diag - torch.amax(dash, dim=(0, 1, 2, 3))) + 1e-4)


class RowMaxOverKeys(GlobalMaxKeys):
    """A max over the token axis per feature (dim -2): no kind of PerformerFeatures."""

    def forward(self, x):
        xs = x * 16 ** -0.25
        dash = torch.einsum("...id,...jd->...ij", xs, self.w.expand(x.shape[0], x.shape[1], 16, 16))
        diag = (x ** 2).sum(-1, keepdim=True) / 2 * 16 ** -0.5
        return 16 ** -0.5 * (torch.exp(dash - diag - torch.amax(dash, dim=-2, keepdim=True)) + 1e-4)


@pytest.mark.parametrize("module,why", [(GlobalMaxKeys, "one constant over the whole tensor"),
                                        (RowMaxOverKeys, "not FAVOR+ with this W")])
def test_look_alike_left_alone(module, why):
    model = export_as(module(), [torch.randn(2, 2, 37, 16)], "torchscript", 17, {0: {0: "b", 2: "n"}})
    out, reports = optimize_model(model)
    details = _details(reports, "fuse-performer-features")
    assert len(details) == 1 and not details[0]["rewritten"], details
    assert details[0]["why"].startswith("features_match_favor_plus") and why in details[0]["why"], details
    assert _count(out, "PerformerFeatures") == 0
