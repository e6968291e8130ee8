"""relu² attention (GAU) → ReluSquaredAttention: the paper's layer, each norm convention, look-alikes."""

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch
from torch.nn import functional as F

from attnx.ops.relu_squared_attention import reference as relu2_reference
from attnx.surgeon import optimize_model
from attnx.surgeon.fuse_relu_squared_attention import _bias_problem
from helpers.graphs import AXES3, EXPORT_LEN, QKV3, assert_same_outputs, attrs_of, export, only_node
from helpers.attention_models import RelPosBias, Relu2

S = 8


class GAULayer(torch.nn.Module):
    """GAU as the FLASH paper's pseudo-code writes it: one dense → silu → (u, v, base),
    per-dimension scale and offset for q and k, relu²(qkᵀ/n) (the norm inside), u ⊙ (A v)."""

    def __init__(self, dim=16, expansion=32, s=S, causal=False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.e, self.s, self.causal = expansion, s, causal
        self.dense = torch.nn.Linear(dim, 2 * expansion + s)
        self.gamma = torch.nn.Parameter(torch.randn(2, s, generator=g) * 0.1 + 1)
        self.beta = torch.nn.Parameter(torch.randn(2, s, generator=g) * 0.1)
        self.out = torch.nn.Linear(expansion, dim)

    def projections(self, x):
        """u, v and the offset-scaled q, k."""
        u, v, base = torch.split(F.silu(self.dense(x)), [self.e, self.e, self.s], dim=-1)
        base = base.unsqueeze(2) * self.gamma + self.beta
        return u, v, base[:, :, 0], base[:, :, 1]

    def forward(self, x):
        n = x.shape[1]
        u, v, q, k = self.projections(x)
        qk = torch.einsum("bns,bms->bnm", q, k)
        kernel = torch.square(F.relu(qk / n))
        if self.causal:
            kernel = kernel * torch.ones(n, n).tril()
        return self.out(u * torch.einsum("bnm,bme->bne", kernel, v))


class Relu2SoftmaxBetween(torch.nn.Module):
    """relu² then a softmax: not GAU's attention."""

    def forward(self, q, k, v):
        return torch.softmax(torch.relu(q @ k.transpose(-1, -2)) ** 2, -1) @ v


class Relu2BandMask(torch.nn.Module):
    """relu² masked to |i − j| ≤ 2: a mask that is not causal."""

    def forward(self, q, k, v):
        n = q.shape[1]
        i = torch.arange(n)
        a = torch.relu(q @ k.transpose(-1, -2)) ** 2 / n
        return a.masked_fill((i[:, None] - i[None, :]).abs() > 2, 0.0) @ v


def optimize(model, target="ort"):
    out, reports = optimize_model(model, target)
    return out, {r.name: r for r in reports}


@pytest.mark.parametrize("causal", [False, True])
def test_gau_layer_in_the_flash_papers_form_becomes_one_relu_squared_node(causal, rng):
    torch.manual_seed(0)
    shapes, axes = [(2, EXPORT_LEN, 16)], (1,)
    model = export(GAULayer(causal=causal), shapes, axes)
    out, reports = optimize(model)
    assert reports["fuse-relu-squared-attention"].rewritten == 1, reports["fuse-relu-squared-attention"].details
    attrs = attrs_of(only_node(out, "attnx", "ReluSquaredAttention"))
    assert (attrs["causal"], attrs["norm"], attrs["norm_placement"]) == (int(causal), "n", "inside")
    assert attrs["scale"] == pytest.approx(1.0)
    assert not any(n.op_type in ("Relu", "Pow") for n in out.graph.node)
    assert_same_outputs(model, out, shapes, axes, rng)


@pytest.mark.parametrize("norm,causal", [("n", False), ("n", True), ("fixed", True), ("none", False)])
def test_each_norm_maps_onto_the_spec_exactly(norm, causal, rng):
    model = export(Relu2(norm, causal), QKV3, AXES3)
    out, _ = optimize(model)
    attrs = attrs_of(only_node(out, "attnx", "ReluSquaredAttention"))
    assert (attrs["causal"], attrs["norm"]) == (int(causal), norm)
    assert attrs["scale"] == pytest.approx(0.125)
    if norm == "fixed":
        assert attrs["fixed_length"] == 64
    assert_same_outputs(model, out, QKV3, AXES3, rng)


def test_relu2_module_matches_the_float64_reference(rng):
    q, k, v = (torch.randn(2, 23, S, generator=rng, dtype=torch.float64) for _ in range(3))
    want = relu2_reference(q[:, None], k[:, None], v[:, None], causal=True, scale=0.125, norm="n",
                           fixed_length=1, norm_placement="outside")[0][:, 0]
    torch.testing.assert_close(Relu2("n", True)(q, k, v), want)


class GAUWithBias(GAULayer):
    """GAULayer with a relative-position bias on the scores, in three spellings:
    `inside`: relu((qkᵀ + b) / n)², causal masked_fill after the square;
    `scaled_after`: relu((qkᵀ + b)·c)² / n (c multiplies the bias too), a 0/1 tril product;
    `post`: relu(c·qkᵀ + b)²·0.3 (the 0.3 folds into the scale as √0.3, and into the bias)."""

    def __init__(self, form, causal=False):
        super().__init__(causal=causal)
        self.form = form
        self.bias = RelPosBias(scale=0.5)

    def forward(self, x):
        n = x.shape[1]
        u, v, q, k = self.projections(x)
        sim = torch.einsum("bns,bms->bnm", q, k)
        if self.form == "inside":
            kernel = F.relu((sim + self.bias(n)) / n) ** 2
        elif self.form == "scaled_after":
            kernel = F.relu((sim + self.bias(n)) * 0.3) ** 2 / n
        else:
            kernel = F.relu(sim * 0.3 + self.bias(n)) ** 2 * 0.3
        if self.causal:
            kernel = kernel.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), 0.0)
        return self.out(u * torch.einsum("bnm,bme->bne", kernel, v))


@pytest.mark.parametrize("form", ["inside", "scaled_after", "post"])
@pytest.mark.parametrize("causal", [False, True])
def test_gau_with_a_relative_position_bias_becomes_one_node_with_the_bias(form, causal, rng):
    torch.manual_seed(0)
    shapes, axes = [(2, EXPORT_LEN, 16)], (1,)
    model = export(GAUWithBias(form, causal), shapes, axes)
    out, reports = optimize(model)
    report = reports["fuse-relu-squared-attention"]
    assert report.rewritten == 1, report.details
    assert "with a bias" in report.details[0]["change"]
    node = only_node(out, "attnx", "ReluSquaredAttention")
    assert len(node.input) == 4
    attrs = attrs_of(node)
    assert attrs["causal"] == int(causal)
    assert (attrs["norm"], attrs["norm_placement"]) == {"inside": ("n", "inside"), "scaled_after": ("n", "outside"),
                                                        "post": ("none", "outside")}[form]
    assert attrs["scale"] == pytest.approx({"inside": 1.0, "scaled_after": 0.3, "post": 0.3 * math.sqrt(0.3)}[form])
    assert not any(n.op_type in ("Relu", "Pow") for n in out.graph.node)
    assert_same_outputs(model, out, shapes, axes, rng)


class Relu2BiasAfterNorm(torch.nn.Module):
    """relu(qkᵀ/n + b)²: the bias comes after the length division, which the op cannot say."""

    def forward(self, q, k, v):
        n = q.shape[1]
        bias = torch.arange(n, dtype=q.dtype)[None, :] * 0.01
        return torch.relu(q @ k.transpose(-1, -2) / n + bias) ** 2 @ v


def test_a_bias_after_the_length_division_is_left_alone_with_the_reason(rng):
    model = export(Relu2BiasAfterNorm(), QKV3, AXES3)
    out, reports = optimize(model)
    (detail,) = reports["fuse-relu-squared-attention"].details
    assert not detail["rewritten"] and detail["why"].startswith("bias_broadcasts"), detail
    assert not any(n.domain == "attnx" for n in out.graph.node)
    assert_same_outputs(model, out, QKV3, AXES3, rng)
    assert "after a length division" in detail["why"]


def test_bias_shapes_the_op_can_broadcast():
    scores = gs.Variable("s", np.float32, ["batch", "seq", "seq"])
    for shape in ([], [1], ["seq", "seq"], [1, "seq"], ["batch", 1, "seq"]):
        assert _bias_problem(gs.Variable("b", np.float32, shape), scores) is None, shape
    for shape, words in (([2, 1, 1, 1], "at most the scores' rank"), (["seq", 7], "each axis 1 or as in"),
                         (None, "are unknown")):
        assert words in _bias_problem(gs.Variable("b", np.float32, shape), scores), shape


@pytest.mark.parametrize("module,check", [
    (Relu2(power=3), "relu_then_square"),
    (Relu2SoftmaxBetween(), "steps_scale_norm_mask"),
    (Relu2BandMask(), "mask_is_causal"),
])
def test_look_alikes_are_left_alone_and_the_report_says_why(module, check):
    model = export(module, QKV3, AXES3)
    out, reports = optimize(model)
    (detail,) = reports["fuse-relu-squared-attention"].details
    assert not detail["rewritten"] and detail["why"].startswith(check), detail
    assert not any(n.domain == "attnx" for n in out.graph.node)


@pytest.mark.parametrize("layer,n_inputs", [(GAULayer(causal=True), 3), (GAUWithBias("inside", causal=True), 4)])
def test_trt_form_of_gau_is_standard_ops_and_the_plugin(layer, n_inputs):
    torch.manual_seed(0)
    model = export(layer, [(2, EXPORT_LEN, 16)], (1,))
    out, _ = optimize(model, "trt")
    assert {n.domain for n in out.graph.node} <= {"", "trt.plugins"}
    assert [(n.op_type, len(n.input)) for n in out.graph.node if n.domain] == [("ReluSquaredAttention", n_inputs)]
    assert not out.functions
    onnx.checker.check_model(out)


def test_scale_folds_exactly_math():
    # relu(x)²·a = relu(√a·x)² for a > 0: the identity the pass uses to fold constants after the square
    x = torch.randn(100, dtype=torch.float64)
    torch.testing.assert_close(torch.relu(x) ** 2 * 0.3, torch.relu(math.sqrt(0.3) * x) ** 2)
