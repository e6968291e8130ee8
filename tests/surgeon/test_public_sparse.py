"""Sparse and local attention as public code and plain torch write it → SparseAttention, or left alone with a reason.

local-attention 1.11.2's `LocalAttention` buckets the sequence (autopad), concatenates each bucket with
its neighbours and masks with −finfo.max: its scores are never N×N. Where its key set is a
SparseAttention pattern it is fused: exact_windowsize is a local window, the default bucket-aligned
window (a query's keys depend on its place in its bucket) is a block pattern with look_back.
Non-causal autopad (the zero keys padded past the end are attended) is not SparseAttention and is
left alone. Plain-torch N×N masks: sliding
window, dilated, strided, with −inf, −finfo.max and bool masks; a plain causal mask is handed back.

Tolerance: ONNX Runtime outputs within 1e-4 of the largest output (helpers.public.RTOL): float32
fusion reorders sums of at most a few hundred terms (~1e-6); one key too many or too few moves an
output by 1e-2 or more.
"""

import numpy as np
import pytest
import torch

from attnx.ops.sparse_attention import reference as sparse_reference
from attnx.surgeon import optimize_model
from helpers.public import assert_close_outputs, export_as

local_attention = pytest.importorskip("local_attention")

D = 8
DYNAMIC = {i: {0: "batch", 2: "seq"} for i in range(3)}
LENGTHS = (1, 37, 300)
BASE = {"pattern": "local", "window": 1, "dilation": 2, "stride": 16, "block": 64, "causal": False}


class Local(torch.nn.Module):
    """local-attention's LocalAttention on q, k, v [b, h, n, d]."""

    def __init__(self, **kw):
        super().__init__()
        self.att = local_attention.LocalAttention(autopad=True, **{"look_backward": 1, **kw})

    def forward(self, q, k, v):
        return self.att(q, k, v)


def _positions(n):
    i = torch.arange(n)
    return i[:, None] - i[None, :]


class SlidingWindowBias(torch.nn.Module):
    """|i − j| ≤ 3 as an additive 0/−inf bias."""

    def forward(self, q, k, v):
        bias = torch.zeros(q.shape[2], q.shape[2]).masked_fill(_positions(q.shape[2]).abs() > 3, float("-inf"))
        return torch.softmax(q @ k.transpose(-1, -2) * D ** -0.5 + bias, -1) @ v


class DilatedFinfo(torch.nn.Module):
    """Causal dilated (every 2nd key, 4 of them) by masked_fill with −finfo(float32).max."""

    def forward(self, q, k, v):
        d = _positions(q.shape[2])
        keep = (d >= 0) & (d < 8) & (d % 2 == 0)
        s = torch.einsum("bhnd,bhmd->bhnm", q, k) * 0.25
        return torch.einsum("bhnm,bhme->bhne", s.masked_fill(~keep, -torch.finfo(s.dtype).max).softmax(-1), v)


class StridedBool(torch.nn.Module):
    """Strided: |i − j| ≤ 2 or i − j ≡ 0 mod 5, as torch.where(bool mask, s, −1e4)."""

    def forward(self, q, k, v):
        d = _positions(q.shape[2])
        keep = (d.abs() <= 2) | (d % 5 == 0)
        s = q @ k.transpose(-1, -2) / D ** 0.5
        return torch.softmax(torch.where(keep, s, torch.tensor(-1e4)), -1) @ v


class PlainCausal(torch.nn.Module):
    """A plain causal triangle: fuse-softmax-attention's, not a sparse pattern."""

    def forward(self, q, k, v):
        n = q.shape[2]
        s = (q @ k.transpose(-1, -2)).masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1),
                                                  -torch.finfo(torch.float32).max)
        return torch.softmax(s, -1) @ v


def _qkv(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, n, D, generator=g) for _ in range(3)]


class Several(torch.nn.Module):
    """Several attention modules on the same q, k, v, one output each: one export for all of them."""

    def __init__(self, modules):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)

    def forward(self, q, k, v):
        return tuple(m(q, k, v) for m in self.parts)


# (module, SparseAttention attributes, or the check that leaves it alone); one graph output each
LOCAL = [
    (lambda: Local(window_size=4, causal=True, exact_windowsize=True), {"pattern": "local", "window": 5, "causal": 1}),
    (lambda: Local(window_size=8, causal=False, look_forward=0, exact_windowsize=True),
     {"pattern": "local", "window": 9, "causal": 1}),
    # the package's default, the bucket-aligned window: a query r places into its bucket sees w·lb + r keys back
    (lambda: Local(window_size=8, causal=True), {"pattern": "block", "block": 8, "causal": 1, "look_back": 1}),
    (lambda: Local(window_size=4, causal=True, look_backward=2),
     {"pattern": "block", "block": 4, "causal": 1, "look_back": 2, "look_ahead": 0}),
    # non-causal autopad attends to the zero keys padded past the sequence end
    (lambda: Local(window_size=4, causal=False, look_forward=1), "windows_are_sparse_pattern"),
]
PLAIN = [
    (SlidingWindowBias, {"pattern": "local", "window": 3, "causal": 0}),
    (DilatedFinfo, {"pattern": "dilated", "window": 4, "dilation": 2, "causal": 1}),
    (StridedBool, {"pattern": "strided", "window": 2, "stride": 5, "causal": 0}),
    (PlainCausal, "mask_not_plain_causal"),
]
# export lengths: not a multiple of any window, so that the autopad branch is exported
GROUPS = {
    "local-dynamo": (LOCAL, "dynamo", 18),
    # optimize=False: an Identity stands between the Softmax and ·V
    "local-dynamo-raw": (LOCAL, "dynamo-raw", 18),
    "plain-dynamo": (PLAIN[1:2], "dynamo", 16),
    # one module per export: TorchScript shares one QKᵀ between modules on the same q, k
    **{f"plain-torchscript-{i}": ([case], "torchscript", 16) for i, case in enumerate(PLAIN)},
}


@pytest.fixture(scope="module")
def exported():
    out = {}
    for name, (cases, exporter, n) in GROUPS.items():
        torch.manual_seed(0)
        opset = 23 if exporter.startswith("dynamo") else 18
        out[name] = export_as(Several([make() for make, _ in cases]), _qkv(n), exporter, opset, DYNAMIC)
    return out


def _attrs(node):
    return {a.name: (a.s.decode() if a.type == a.STRING else a.i) for a in node.attribute if a.name != "scale"}


def _scale_of(module):
    if isinstance(module, Local):
        return module.att.scale or D ** -0.5
    return 0.25 if isinstance(module, DilatedFinfo) else D ** -0.5


@pytest.mark.parametrize("make,want", [c for c in LOCAL + PLAIN if isinstance(c[1], dict)])
def test_modules_equal_the_sparse_reference(make, want):
    """The expectation itself, from the modules in float64 (not from attnx's passes), at a non-multiple length."""
    module = make().double()
    q, k, v = (x.double() for x in _qkv(37, seed=1))
    torch.testing.assert_close(module(q, k, v), sparse_reference(q, k, v, **{**BASE, **want},
                                                                 scale=_scale_of(module))[0])


def test_non_causal_autopad_is_no_sparse_pattern():
    """Why non-causal autopad is left alone: at a length the window does not divide it matches no local or block
    pattern (it attends to the zero keys padded past the end), though at one it divides it is block look-around."""
    from attnx.surgeon.fuse_local_windows import PATTERN_DEFAULTS, _candidates

    module = Local(window_size=4, causal=False, look_forward=1).double()

    def matches(n):
        q, k, v = (x.double() for x in _qkv(n, seed=1))
        y = module(q, k, v)
        return [c for c in _candidates(4, 12) if torch.allclose(
            y, sparse_reference(q, k, v, **{**PATTERN_DEFAULTS, **c}, scale=D ** -0.5)[0], atol=1e-6)]

    assert matches(37) == []
    assert matches(36) == [{"pattern": "block", "block": 4, "causal": False, "look_back": 1, "look_ahead": 1}]


@pytest.mark.parametrize("group", list(GROUPS))
def test_fused_or_left_alone_with_reason(group, exported):
    cases, _, _ = GROUPS[group]
    model = exported[group]
    out, reports = optimize_model(model)
    report = {r.name: r for r in reports}["fuse-sparse-attention"]
    makers = {o: n for n in out.graph.node for o in n.output}
    for output, (_, want) in zip(out.graph.output, cases):
        node = makers.get(output.name)
        while node is not None and node.op_type in ("Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze"):
            node = makers.get(node.input[0])  # the layout around the fused node
        fused = node is not None and node.domain == "attnx" and node.op_type == "SparseAttention"
        if isinstance(want, dict):
            assert fused, (output.name, report.details)
            attrs = _attrs(node)
            assert {key: attrs[key] for key in want} == want
        else:
            assert not fused
    fused = [c for c in cases if isinstance(c[1], dict)]
    left = sorted(c[1] for c in cases if not isinstance(c[1], dict))
    assert report.rewritten == len(fused), report.details
    assert sorted(d["why"].split(":")[0] for d in report.details if not d["rewritten"]) == left, report.details
    assert sum(n.op_type == "SparseAttention" for n in out.graph.node) == len(fused)
    rng = np.random.default_rng(0)
    feeds = [{f"x{i}": rng.standard_normal((2, 2, n, D)).astype(np.float32) for i in range(3)} for n in LENGTHS]
    assert_close_outputs(model, out, feeds)


@pytest.mark.parametrize("group", ["local-dynamo", "local-dynamo-raw", "plain-torchscript-1", "plain-torchscript-3"])
def test_trt_form_is_clean(group, exported):
    cases, _, _ = GROUPS[group]
    out, _ = optimize_model(exported[group], "trt")
    assert "attnx" not in {n.domain for n in out.graph.node}
    plugins = [n.op_type for n in out.graph.node if n.domain == "trt.plugins"]
    assert plugins.count("SparseAttention") == sum(isinstance(want, dict) for _, want in cases)
