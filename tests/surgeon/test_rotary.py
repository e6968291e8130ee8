"""RoPE written in plain torch (rotate-half and interleaved) and by x-transformers → ONNX RotaryEmbedding."""

import pytest
import torch

from attnx.surgeon import optimize_model
from helpers.graphs import EXPORT_LEN, QKV, QKV_AXES, assert_same_outputs, attrs_of, export
from helpers.attention_models import RotaryAttention, rotate_every_two, rotate_half, wrong_sign


class PositionIdsRotary(torch.nn.Module):
    """Angles from a position-ids input: cos and sin depend on data, so no fixed table."""

    def forward(self, x, pos):
        angles = torch.cat((pos.unsqueeze(-1) * 0.1, pos.unsqueeze(-1) * 0.01), -1).repeat(1, 1, 4)
        return x * angles.cos() + rotate_half(x) * angles.sin()


def optimize(model, passes=None):
    out, reports = optimize_model(model, "ort", passes)
    return out, {r.name: r for r in reports}


@pytest.mark.parametrize("rotate,interleaved", [(rotate_half, 0), (rotate_every_two, 1)])
def test_rotary_attention_becomes_rotary_embedding_and_attention(rotate, interleaved, rng):
    model = export(RotaryAttention(rotate), QKV, QKV_AXES, opset=23)
    out, reports = optimize(model)
    assert reports["fuse-rotary"].rewritten == 2, reports["fuse-rotary"].details
    rotaries = [attrs_of(n) for n in out.graph.node if n.op_type == "RotaryEmbedding"]
    assert [a["interleaved"] for a in rotaries] == [interleaved] * 2
    assert sum(n.op_type == "Attention" for n in out.graph.node) == 1
    assert not any(n.op_type == "Neg" for n in out.graph.node)
    assert_same_outputs(model, out, QKV, QKV_AXES, rng, lengths=(1, 7, 37, 100))


def test_opset_below_23_is_reported_not_rewritten_where_onnx_runtime_lacks_23(monkeypatch):
    model = export(RotaryAttention(), QKV, QKV_AXES, opset=18)
    monkeypatch.setattr("attnx.surgeon.upgrade.runtime_runs_opset", lambda opset=23: False)
    out, reports = optimize(model, ["fuse-rotary"])
    details = reports["fuse-rotary"].details
    assert len(details) == 2 and all("opset is 18" in d["why"] for d in details), details
    assert not any(n.op_type == "RotaryEmbedding" for n in out.graph.node)


def test_opset_below_23_is_converted_and_rewritten_saying_so(rng):
    model = export(RotaryAttention(), QKV, QKV_AXES, opset=18)
    out, reports = optimize_model(model, "ort", ["fuse-rotary"])
    assert any(n.startswith("converted from opset 18 to opset 23") for n in reports.notes), reports.notes
    assert sum(n.op_type == "RotaryEmbedding" for n in out.graph.node) == 2
    assert_same_outputs(model, out, QKV, QKV_AXES, rng, lengths=(1, 37))


@pytest.mark.parametrize("module,shapes,axes,check", [
    (RotaryAttention(wrong_sign), QKV, QKV_AXES, "rotation_of_x"),
    (PositionIdsRotary(), [(2, EXPORT_LEN, 8), (2, EXPORT_LEN)], (1, 1), "cos_sin_from_lengths"),
])
def test_look_alikes_are_left_alone(module, shapes, axes, check):
    model = export(module, shapes, axes, opset=23)
    out, reports = optimize(model, ["fuse-rotary"])
    details = reports["fuse-rotary"].details
    assert details and all(not d["rewritten"] and d["why"].startswith(check) for d in details), details
    assert not any(n.op_type == "RotaryEmbedding" for n in out.graph.node)


def test_x_transformers_decoder_with_rotary_fuses_rope_and_attention(rng):
    x_transformers = pytest.importorskip("x_transformers", reason="x-transformers is in the test extra")
    torch.manual_seed(0)
    module = x_transformers.Decoder(dim=32, depth=1, heads=2, attn_dim_head=32, rotary_pos_emb=True)
    shapes, axes = [(2, EXPORT_LEN, 32)], (1,)
    model = export(module, shapes, axes, opset=23)
    out, reports = optimize(model)
    assert reports["fuse-rotary"].rewritten == 2, reports["fuse-rotary"].details
    assert reports["fuse-softmax-attention"].rewritten == 1
    rotaries = [attrs_of(n) for n in out.graph.node if n.op_type == "RotaryEmbedding"]
    # x-transformers rotates the first half of each 32-wide head (partial rotary, GPT-J style)
    assert [(a["interleaved"], a["rotary_embedding_dim"]) for a in rotaries] == [(1, 16)] * 2
    assert_same_outputs(model, out, shapes, axes, rng)
    trt, _ = optimize_model(model, "trt")
    assert {n.domain for n in trt.graph.node} == {""}  # RotaryEmbedding and Attention are standard ops
