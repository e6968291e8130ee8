"""lucidrains' FLASH-pytorch (GAU, FLASH) and plain-torch FLASH layers, exported as users export them.

FLASH-pytorch exports with TorchScript (dynamo=False); its relu² steps are spelled there with
shapes the exporter leaves unnamed (a T5 bias [unk, unk] beside scores [b, n, n]) and masks
through Where on index arithmetic (FLASH's padded-key mask, the triu causal mask), so the relu²
pass reads them by running them on probes (dynamo exports are read the same way). GAU becomes one
ReluSquaredAttention with its T5 bias; FLASH becomes one MixedChunkAttention with its T5 bias: the
mask on the keys it pads is in the last chunk only, but v is zero there (F.pad), so it is dropped.
Plain-torch FLASH with the same mask fuses the same way; padded with ones instead, the mask matters
and the in-chunk part stays a ReluSquaredAttention with it, with the reason. A FLASH with a head axis
([B, H, C, g, S]) is one MixedChunkAttention over its heads (the relu² pass merges B and H).

Outputs are compared in ONNX Runtime before and after at batch 2 and lengths 1, 37 and 300
(group 8: 37 and 300 leave a partial last chunk) within 1e-4 relative (helpers.public.RTOL).
"""

import onnx
# onnx.reference (which torch's dynamo exporter imports) builds its op table once, on first import,
# and refuses two ops named LinearAttention (ONNX's and attnx's): load it before optimize_model
# registers attnx's schemas, or the dynamo export below fails when it runs after another test
import onnx.reference  # noqa: F401
import pytest
import torch
from torch.nn import functional as F

from attnx.surgeon import optimize_model
from helpers.public import assert_close_outputs, export_as

flash_pytorch = pytest.importorskip("flash_pytorch")
rotary_embedding_torch = pytest.importorskip("rotary_embedding_torch")

DIM, QK, GROUP = 32, 16, 8
LENGTHS = (1, 37, 300)
DYNAMIC = {0: {0: "batch", 1: "seq"}}
RELU2, MIXED = "fuse-relu-squared-attention", "fuse-mixed-chunk-attention"
CHUNK_PASSES = [RELU2, MIXED]  # FLASH's graph is large: only the passes under test, to keep the time


class Positional(torch.nn.Module):
    """FLASH-pytorch's FLASH takes its mask keyword-only; TorchScript passes inputs positionally."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def feeds(n):
    g = torch.Generator().manual_seed(n)
    return {"x0": torch.randn(2, n, DIM, generator=g).numpy()}


def attnx_nodes(model, op):
    return [n for n in model.graph.node if n.domain == "attnx" and n.op_type == op]


def attrs_of(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def details(reports, name):
    (report,) = [r for r in reports if r.name == name]
    return report.details


def public_gau(causal):
    torch.manual_seed(0)
    return flash_pytorch.GAU(dim=DIM, query_key_dim=QK, causal=causal)


def public_flash(causal):
    torch.manual_seed(0)
    rotary = rotary_embedding_torch.RotaryEmbedding(dim=8)
    return Positional(flash_pytorch.FLASH(dim=DIM, group_size=GROUP, query_key_dim=QK, causal=causal,
                                          rotary_pos_emb=rotary))


def export(module, exporter="torchscript", opset=18):
    return export_as(module, (torch.randn(2, 37, DIM),), exporter, opset, DYNAMIC)


@pytest.mark.parametrize("causal,opset", [(False, 17), (False, 20), (True, 18)])
def test_public_gau_from_torchscript_becomes_relu_squared_attention_with_its_t5_bias(causal, opset):
    model = export(public_gau(causal), opset=opset)
    out, reports = optimize_model(model)
    (node,) = attnx_nodes(out, "ReluSquaredAttention")
    assert len(node.input) == 4  # q, k, v and the T5 bias
    attrs = attrs_of(node)
    # GAU: relu(qkᵀ/n + b/n)² with the T5 bias scaled by √dim inside: norm n inside, scale 1
    assert (attrs["causal"], attrs["norm"], attrs["norm_placement"]) == (int(causal), b"n", b"inside")
    assert attrs["scale"] == pytest.approx(1.0, rel=1e-4)
    assert "probed at input lengths" in str(details(reports, RELU2))
    assert_close_outputs(model, out, [feeds(n) for n in LENGTHS])


def test_public_gau_from_dynamo_becomes_relu_squared_attention():
    model = export(public_gau(True), "dynamo", 18)
    out, reports = optimize_model(model)
    (node,) = attnx_nodes(out, "ReluSquaredAttention")
    assert len(node.input) == 4 and attrs_of(node)["causal"] == 1
    assert_close_outputs(model, out, [feeds(n) for n in LENGTHS])


def test_public_flash_from_dynamo_becomes_mixed_chunk_attention_and_its_rotary_embeddings():
    """dynamo folds the chunk bias and the triu mask into constants; every pass runs (rotary included)."""
    model = export(public_flash(True), "dynamo", 18)
    out, reports = optimize_model(model)
    (node,) = attnx_nodes(out, "MixedChunkAttention")
    assert len(node.input) == 6 and attrs_of(node)["causal"] == 1
    # quad_q, lin_q, quad_k, lin_k: ONNX's RotaryEmbedding (the file is upgraded to opset 23)
    assert [n.op_type for n in out.graph.node].count("RotaryEmbedding") == 4
    assert not attnx_nodes(out, "ReluSquaredAttention")
    assert_close_outputs(model, out, [feeds(n) for n in LENGTHS])


def test_trt_form_of_public_gau_is_clean():
    out, _ = optimize_model(export(public_gau(True), opset=20), "trt")
    assert {n.domain for n in out.graph.node} <= {"", "trt.plugins"}
    assert [n.op_type for n in out.graph.node if n.domain == "trt.plugins"] == ["ReluSquaredAttention"]
    assert not out.functions


@pytest.fixture(scope="module", params=[False, True], ids=["bidirectional", "causal"])
def flash(request):
    model = export(public_flash(request.param))
    return request.param, model, optimize_model(model, passes=CHUNK_PASSES)


def test_public_flash_in_chunk_relu_squared_keeps_its_bias_and_padded_key_mask(flash):
    causal, model, _ = flash
    out, reports = optimize_model(model, passes=[RELU2])
    (node,) = attnx_nodes(out, "ReluSquaredAttention")
    assert len(node.input) == 4
    attrs = attrs_of(node)
    # relu(qkᵀ/g + b)² over chunks of g, no length norm
    assert (attrs["causal"], attrs["norm"]) == (int(causal), b"none")
    assert attrs["scale"] == pytest.approx(1 / GROUP, rel=1e-4)
    (detail,) = details(reports, RELU2)
    assert "and a key mask" in detail["change"]


def test_public_flash_becomes_one_mixed_chunk_attention_with_its_t5_bias(flash):
    """The in-chunk bias is T5's plus a mask on the keys the model pads, which only the last chunk has.
    v is zero at those keys (F.pad), so relu² · v is 0 there with or without the mask: the op takes the
    first chunk's bias and reads v through a copy of the model's zero padding."""
    causal, model, (out, reports) = flash
    (node,) = attnx_nodes(out, "MixedChunkAttention")
    assert len(node.input) == 6  # q, k, lin_q, lin_k, v and the in-chunk bias
    attrs = attrs_of(node)
    assert (attrs["causal"], attrs["chunk_size"]) == (int(causal), GROUP)
    assert attrs["quad_scale"] == pytest.approx(1 / GROUP, rel=1e-4)
    (detail,) = details(reports, MIXED)
    assert detail["rewritten"] and "pads with zeros dropped" in detail["change"], detail
    assert not attnx_nodes(out, "ReluSquaredAttention")
    # 8 and 24: whole chunks, where the TorchScript trace pads one more chunk of zeros
    assert_close_outputs(model, out, [feeds(n) for n in (*LENGTHS, GROUP, 3 * GROUP)])


def test_trt_form_of_public_flash_is_clean(flash):
    causal, model, _ = flash
    if not causal:
        pytest.skip("one form suffices: the bidirectional graph differs only in the across-chunk part")
    out, _ = optimize_model(model, "trt", passes=CHUNK_PASSES)
    assert {n.domain for n in out.graph.node} <= {"", "trt.plugins"}
    assert [n.op_type for n in out.graph.node if n.domain == "trt.plugins"] == ["MixedChunkAttention"]


class PlainFLASH(torch.nn.Module):
    """FLASH written in plain torch as FLASH-pytorch spells it, without its relative-position bias:
    `key_mask` masks the padded keys inside the chunks as FLASH-pytorch does (masked_fill after the
    relu²); `v_pad` is the value v is padded with (FLASH-pytorch's is 0); `heads` adds a head axis
    [B, H, C, g, S]; `head_bias` adds a learned [H, g, g] bias inside the chunks, one per head."""

    def __init__(self, causal=False, key_mask=False, heads=0, v_pad=0.0, head_bias=False):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.causal, self.key_mask, self.heads, self.v_pad = causal, key_mask, heads, v_pad
        h = max(heads, 1)
        self.to_hidden = torch.nn.Linear(DIM, 2 * QK * h)
        self.to_qk = torch.nn.Linear(DIM, QK * h)
        self.gamma = torch.nn.Parameter(torch.randn(4, QK, generator=g) * 0.1 + 1)
        self.beta = torch.nn.Parameter(torch.randn(4, QK, generator=g) * 0.1)
        self.to_out = torch.nn.Linear(QK * h, DIM)
        self.head_bias = torch.nn.Parameter(torch.randn(h, 1, g_ := GROUP, g_, generator=g)) if head_bias else None

    def forward(self, x):
        b, n, g = x.shape[0], x.shape[1], GROUP
        v, gate = F.silu(self.to_hidden(x)).chunk(2, dim=-1)
        qk = F.silu(self.to_qk(x))
        if self.heads:
            v, qk = (t.reshape(b, n, self.heads, QK).transpose(1, 2) for t in (v, qk))
        quad_q, lin_q, quad_k, lin_k = (qk.unsqueeze(-2) * self.gamma + self.beta).unbind(dim=-2)
        padding = (g - n % g) % g
        lead = v.shape[:-2]
        quad_q, quad_k, lin_q, lin_k = (F.pad(t, (0, 0, 0, padding)).reshape(*lead, -1, g, QK)
                                        for t in (quad_q, quad_k, lin_q, lin_k))
        v = F.pad(v, (0, 0, 0, padding), value=self.v_pad).reshape(*lead, -1, g, QK)
        sim = torch.einsum("... i d, ... j d -> ... i j", quad_q, quad_k) / g
        if self.head_bias is not None:
            sim = sim + (self.head_bias if self.heads else self.head_bias[0])
        attn = F.relu(sim) ** 2
        if self.key_mask:
            keep = F.pad(torch.ones(b, n, dtype=torch.bool), (0, padding), value=False).reshape(b, -1, 1, g)
            attn = attn.masked_fill(~keep, 0.0)
        if self.causal:
            attn = attn.masked_fill(torch.ones(g, g, dtype=torch.bool).triu(1), 0.0)
        quad_out = torch.einsum("... i j, ... j d -> ... i d", attn, v)
        if self.causal:
            lin_kv = torch.einsum("... g n d, ... g n e -> ... g d e", lin_k, v) / g
            lin_kv = F.pad(lin_kv.cumsum(dim=-3), (0, 0, 0, 0, 1, -1))
            lin_out = torch.einsum("... g d e, ... g n d -> ... g n e", lin_kv, lin_q)
        else:
            lin_kv = torch.einsum("... g n d, ... g n e -> ... d e", lin_k, v) / n
            lin_out = torch.einsum("... g n d, ... d e -> ... g n e", lin_q, lin_kv)
        y = (quad_out + lin_out).reshape(*lead, -1, QK)[..., :n, :]
        if self.heads:
            y = y.transpose(1, 2).reshape(b, n, -1)
        return self.to_out(gate * y)


@pytest.mark.parametrize("causal", [False, True])
def test_plain_flash_from_torchscript_becomes_one_mixed_chunk_attention(causal):
    model = export(PlainFLASH(causal))
    out, reports = optimize_model(model)
    (node,) = attnx_nodes(out, "MixedChunkAttention")
    attrs = attrs_of(node)
    assert (attrs["causal"], attrs["chunk_size"]) == (int(causal), GROUP)
    assert not [n for n in out.graph.node if n.domain == "attnx" and n.op_type != "MixedChunkAttention"]
    assert_close_outputs(model, out, [feeds(n) for n in LENGTHS])


@pytest.mark.parametrize("causal", [False, True])
def test_plain_flash_with_a_padded_key_mask_on_zero_padding_becomes_one_mixed_chunk_attention(causal):
    model = export(PlainFLASH(causal, key_mask=True))
    out, reports = optimize_model(model, passes=CHUNK_PASSES)
    (node,) = attnx_nodes(out, "MixedChunkAttention")
    # the mask alone is 0 in the first chunk and is dropped; causal, the bias keeps the triu mask
    assert len(node.input) == (6 if causal else 5) and not attnx_nodes(out, "ReluSquaredAttention")
    assert_close_outputs(model, out, [feeds(n) for n in LENGTHS])


def test_flash_exported_at_a_static_batch_of_1_becomes_one_mixed_chunk_attention():
    """dynamo writes the static batch of 1 into its Reshapes: the across-chunk part is probed at that batch."""
    model = export_as(public_flash(True), (torch.randn(1, 37, DIM),), "dynamo", 18, {0: {1: "seq"}})
    out, reports = optimize_model(model, passes=CHUNK_PASSES)
    (detail,) = details(reports, MIXED)
    assert detail["rewritten"], detail
    assert_close_outputs(model, out, [{"x0": feeds(n)["x0"][:1]} for n in LENGTHS])


def test_plain_flash_whose_masked_keys_are_not_zero_keeps_the_mask_in_relu_squared_attention():
    """v padded with ones: the mask on the padded keys is what keeps them out, and it is in the last
    chunk only, which MixedChunkAttention's one in-chunk bias cannot say."""
    model = export(PlainFLASH(True, key_mask=True, v_pad=1.0))
    out, reports = optimize_model(model, passes=CHUNK_PASSES)
    (node,) = attnx_nodes(out, "ReluSquaredAttention")
    assert len(node.input) == 4 and not attnx_nodes(out, "MixedChunkAttention")
    (detail,) = details(reports, MIXED)
    assert detail["why"].startswith("bias_same_in_every_chunk: "), detail
    assert "not the model's zero padding" in detail["why"]
    assert_close_outputs(model, out, [feeds(n) for n in LENGTHS])


@pytest.mark.parametrize("exporter,causal,key_mask,head_bias", [
    ("torchscript", True, False, False), ("torchscript", False, True, False),
    ("torchscript", True, True, True), ("dynamo", False, False, True)])
def test_plain_flash_with_a_head_axis_becomes_one_mixed_chunk_attention_over_its_heads(
        exporter, causal, key_mask, head_bias):
    """[B, H, C, g, S]: the relu² pass runs the in-chunk part with B and H merged ([B·H, C, g, S]); the
    mixed pass reads the chunks at rank 5 and gives the op the heads as its H, with a per-head bias
    [1, H, g, g] when there is one."""
    model = export(PlainFLASH(causal, key_mask=key_mask, heads=2, head_bias=head_bias), exporter, 18)
    out, reports = optimize_model(model, passes=CHUNK_PASSES)
    (node,) = attnx_nodes(out, "MixedChunkAttention")
    assert attrs_of(node)["causal"] == int(causal) and not attnx_nodes(out, "ReluSquaredAttention")
    # a bias is kept when it is not 0 in the first chunk: the per-head bias, or the causal triu mask
    assert len(node.input) == (6 if head_bias or (causal and key_mask) else 5)
    (detail,) = details(reports, MIXED)
    assert "the head axis of [B, H, C, g, S] as the op's H" in detail["change"]
    (relu2,) = details(reports, RELU2)
    assert "3 batch axes: the first 2 merged into one" in relu2["change"]
    assert_close_outputs(model, out, [feeds(n) for n in LENGTHS])


def test_trt_form_of_flash_with_a_head_axis_is_clean():
    out, _ = optimize_model(export(PlainFLASH(True, key_mask=True, heads=2, head_bias=True)), "trt",
                            passes=CHUNK_PASSES)
    assert {n.domain for n in out.graph.node} <= {"", "trt.plugins"}
    assert [n.op_type for n in out.graph.node if n.domain == "trt.plugins"] == ["MixedChunkAttention"]
    assert not out.functions
