"""The numeric guard (attnx.surgeon.guard): a wrong rewrite is rolled back, a right one is kept with
its measured error, and every attention region left unfused is listed with the passes' reasons."""

import math

import numpy as np
import pytest
import torch

from attnx.surgeon import optimize_model, pipeline
from attnx.surgeon.framework import Match
from attnx.surgeon.fuse_softmax_attention import FuseSoftmaxAttention
from attnx.surgeon.graph import Emitter, import_graph, take_over
from helpers.graphs import QKV, QKV_AXES, assert_same_outputs, export
from helpers.attention_models import CausalSoftmaxAttention, CumsumCausalLinearAttention

SOFTMAX = FuseSoftmaxAttention.name


class TwoCausalAttentions(torch.nn.Module):
    """Two causal softmax attentions in a row: two candidates of the softmax fusion."""

    def forward(self, q, k, v):
        n = q.shape[2]
        keep = torch.ones(n, n, dtype=torch.bool).tril()
        y = q
        for _ in range(2):
            s = (y @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            y = torch.softmax(s.masked_fill(~keep, float("-inf")), -1) @ v
        return y


class WrongScale(FuseSoftmaxAttention):
    """The softmax fusion with a rewrite that doubles the scale at the anchors in `bad` (all when None)."""

    bad: set[str] | None = None

    def rewrite(self, graph, match: Match) -> str:
        old = {id(n) for n in graph.nodes}
        change = super().rewrite(graph, match)
        if self.bad is not None and match.anchor not in self.bad:
            return change
        (node,) = [n for n in graph.nodes if id(n) not in old and n.op == "Attention"]
        node.attrs["scale"] = 2.0 * float(node.attrs["scale"])
        return "deliberately wrong scale"


class Unrunnable(FuseSoftmaxAttention):
    """A rewrite to a node ONNX Runtime cannot run: the guard cannot evaluate it."""

    def rewrite(self, graph, match: Match) -> str:
        att = match.bound[0]
        emit = Emitter(graph, f"unrunnable/{match.anchor}")
        take_over(att.output, emit.op("NoSuchOp", att.q.tensor, att.k.tensor, att.v.tensor,
                                      domain="no.such.domain"), emit)
        return "an op nothing runs"


@pytest.fixture(scope="module")
def causal():
    return export(CausalSoftmaxAttention(), QKV, QKV_AXES, opset=23)


@pytest.fixture(scope="module")
def two():
    return export(TwoCausalAttentions(), QKV, QKV_AXES, opset=23)


def _with(monkeypatch, cls):
    monkeypatch.setitem(pipeline.PASSES, SOFTMAX, cls)


def _ops(model):
    return [n.op_type for n in model.graph.node]


def _by_name(reports):
    return {r.name: r for r in reports}


def test_a_right_rewrite_is_kept_with_the_measured_error(causal):
    out, reports = optimize_model(causal, "ort", [SOFTMAX])
    entry = _by_name(reports)[SOFTMAX].details[0]
    assert entry["rewritten"] and "Attention" in _ops(out)
    assert entry["guard"]["lengths"] == [37, 64] and entry["guard"]["batch"] == 2
    assert 0 <= entry["guard"]["max_error"] <= 1e-5
    assert "numeric guard: max |after − before|" in entry["change"]


def test_a_wrong_scale_is_rolled_back_and_the_output_equals_the_input(monkeypatch, causal):
    _with(monkeypatch, WrongScale)
    out, reports = optimize_model(causal, "ort", [SOFTMAX])
    report = _by_name(reports)[SOFTMAX]
    entry = report.details[0]
    assert report.rewritten == 0 and not entry["rewritten"], entry
    assert entry["checks"]["numeric_guard"] is False
    assert entry["why"].startswith("numeric_guard: the rewrite changes") and "max |after − before|" in entry["why"]
    assert "Attention" not in _ops(out)
    assert_same_outputs(causal, out, QKV, QKV_AXES, torch.Generator().manual_seed(1), lengths=(1, 37, 100))
    # the region is listed as left alone, with the guard's reason
    left = reports.left_alone.details
    assert [d["at"] for d in left] == [entry["at"]] and "numeric_guard" in left[0]["why"]


def test_only_the_wrong_region_is_rolled_back(monkeypatch, two):
    anchors = [m.anchor for m in FuseSoftmaxAttention().find(import_graph(two))]
    assert len(anchors) == 2

    class WrongAtSecond(WrongScale):
        bad = {anchors[1]}

    _with(monkeypatch, WrongAtSecond)
    out, reports = optimize_model(two, "ort", [SOFTMAX])
    details = {d["at"]: d for d in _by_name(reports)[SOFTMAX].details}
    assert details[anchors[0]]["rewritten"] and "guard" in details[anchors[0]]
    assert not details[anchors[1]]["rewritten"] and details[anchors[1]]["why"].startswith("numeric_guard:")
    assert _ops(out).count("Attention") == 1
    assert_same_outputs(two, out, QKV, QKV_AXES, torch.Generator().manual_seed(2), lengths=(1, 37))


def test_a_region_the_guard_cannot_run_is_rolled_back(monkeypatch, causal):
    _with(monkeypatch, Unrunnable)
    out, reports = optimize_model(causal, "ort", [SOFTMAX])
    entry = _by_name(reports)[SOFTMAX].details[0]
    assert not entry["rewritten"] and entry["why"].startswith("numeric_guard: cannot evaluate"), entry
    assert "NoSuchOp" not in _ops(out)


def test_every_unfused_attention_region_gets_the_passes_reasons():
    model = export(CausalSoftmaxAttention(), QKV, QKV_AXES, opset=18)
    _, reports = optimize_model(model, "ort", ["reassociate"])  # the softmax pass is not run
    assert reports.left_alone.name == pipeline.LEFT_ALONE and pipeline.LEFT_ALONE not in _by_name(reports)
    left = reports.left_alone.details
    assert len(left) == 1 and reports.left_alone.matched == 1
    assert "reassociate: softmax_free: a Softmax between the products" in left[0]["why"]
    assert {"pass": "reassociate", "why": _by_name(reports)["reassociate"].details[0]["why"]} in left[0]["reasons"]
    assert left[0]["steps"][-1] == "Softmax"


def test_an_opset_18_softmax_is_converted_to_23_and_fused_saying_so():
    model = export(CausalSoftmaxAttention(), QKV, QKV_AXES, opset=18)  # Attention needs opset 23
    out, reports = optimize_model(model, "ort")
    assert [n for n in reports.notes if n.startswith("converted from opset 18 to opset 23")], reports.notes
    assert _ops(out).count("Attention") == 1 and not reports.left_alone.details
    assert_same_outputs(model, out, QKV, QKV_AXES, torch.Generator().manual_seed(3), lengths=(1, 37))


def test_region_boundary_is_named_by_tensors_the_graph_before_also_has(causal):
    graph = import_graph(causal)
    names = set(graph.tensors())
    report = FuseSoftmaxAttention().run(graph, 23)
    (region,) = report.regions
    assert region.nodes and set(region.inputs) <= names and region.outputs
    assert set(region.outputs) <= names and set(region.outputs) <= {t.name for t in graph.outputs}
    assert all(np.issubdtype(graph.tensors()[n].dtype, np.floating) for n in region.inputs)


def _linear(monkeypatch, factor):
    """LinearAttention fusion of a causal cumsum linear attention, with LinearAttention's float64 reference
    multiplied by `factor` (1: the real one): the deployed form (its function body) is untouched."""
    import dataclasses

    from attnx import ops

    spec = ops.REGISTRY["LinearAttention"]
    real = spec.reference
    monkeypatch.setitem(ops.REGISTRY, "LinearAttention", dataclasses.replace(
        spec, reference=lambda *a, **kw: tuple(y * factor for y in real(*a, **kw))))
    model = export(CumsumCausalLinearAttention(), QKV, QKV_AXES)
    return optimize_model(model, "ort", ["fuse-linear-attention"])


def test_the_guard_holds_the_rewrite_to_the_fused_ops_float64_reference(monkeypatch):
    out, reports = _linear(monkeypatch, 1.0)
    entry = _by_name(reports)["fuse-linear-attention"].details[0]
    assert entry["rewritten"] and "(the ops' float64 references, onnx's reference evaluator)" in entry["change"], entry
    assert set(entry["guard"]["errors"]) == {"deployed", "float64"}, entry["guard"]
    # a reference off by 0.1 % is caught though ONNX Runtime, running the function body, agrees
    out, reports = _linear(monkeypatch, 1.001)
    entry = _by_name(reports)["fuse-linear-attention"].details[0]
    assert not entry["rewritten"] and entry["checks"]["numeric_guard"] is False, entry
    assert "(after: the ops' float64 references" in entry["why"], entry["why"]
    assert not [n for n in out.graph.node if n.domain == "attnx"]
