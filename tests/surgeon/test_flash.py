"""FLASH layers (mixed chunk attention) through `attnx optimize`: one MixedChunkAttention node.

Two spellings: the paper's pseudo-code (the sum taken on chunks [B, C, g, E], causal prefix as
cumsum minus itself) and the way lucidrains' FLASH-pytorch writes it (einsum '... i d, ... j d',
relu(sim) ** 2, masked_fill on a triu mask, causal prefix as cumsum then F.pad by one chunk, the
sum taken after the fold back to [B, N, E] and the cut to n), each causal and not. The
in-chunk part becomes ReluSquaredAttention (fuse-relu-squared-attention), then
fuse-mixed-chunk-attention reads the across-chunk part by its values and fuses both. Look-alikes
(an inclusive prefix, relu³ in the chunks) are left alone with the reason in the report.
"""

import pytest
import torch
from torch.nn import functional as F

from attnx.surgeon import optimize_model
from helpers.graphs import assert_same_outputs, attrs_of, export, only_node
from helpers.attention_models import RelPosBias

G, S, E, DIM = 4, 8, 16, 16
SHAPES, AXES = [(2, 16, DIM)], (1,)
LENGTHS = (1, 7, 16, 37)  # tails that are not whole chunks, and lengths of several chunks


class FLASHLayer(torch.nn.Module):
    """FLASH (Hua et al. 2022) after the paper's pseudo-code: shared base, four scale/offset heads,
    relu²(qkᵀ/g) inside chunks of g, linear attention across chunks (causal: exclusive prefix / g,
    non-causal: / n), gated by u. The tail is padded to a whole chunk. `prefix` and `power` make
    the look-alikes: an inclusive prefix, relu³."""

    def __init__(self, causal=False, prefix="exclusive", power=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.causal, self.prefix, self.power = causal, prefix, power
        self.dense = torch.nn.Linear(DIM, 2 * E + S)
        self.gamma = torch.nn.Parameter(torch.randn(4, S, generator=g) * 0.1 + 1)
        self.beta = torch.nn.Parameter(torch.randn(4, S, generator=g) * 0.1)
        self.out = torch.nn.Linear(E, DIM)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        u, v, base = torch.split(F.silu(self.dense(x)), [E, E, S], dim=-1)
        base = base.unsqueeze(2) * self.gamma + self.beta
        pad = (G - n % G) % G
        base, v_p = F.pad(base, (0, 0, 0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
        c = (n + pad) // G
        base = base.reshape(b, c, G, 4, S)
        qq, qk, lq, lk = base[:, :, :, 0], base[:, :, :, 1], base[:, :, :, 2], base[:, :, :, 3]
        vc = v_p.reshape(b, c, G, E)
        quad = torch.relu(torch.einsum("bcns,bcms->bcnm", qq, qk) / G) ** self.power
        if self.causal:
            quad = quad * torch.ones(G, G).tril()
            kv = torch.einsum("bcns,bcne->bcse", lk, vc) / G
            if self.prefix == "exclusive":
                kv = torch.cumsum(kv, 1) - kv  # the exclusive prefix over earlier chunks
            else:
                kv = torch.cumsum(kv, 1)
            lin = torch.einsum("bcns,bcse->bcne", lq, kv)
        else:
            kv = torch.einsum("bcns,bcne->bse", lk, vc) / n
            lin = torch.einsum("bcns,bse->bcne", lq, kv)
        y = (torch.einsum("bcnm,bcme->bcne", quad, vc) + lin).reshape(b, c * G, E)[:, :n]
        return self.out(u * y)


class GroupedFLASH(torch.nn.Module):
    """FLASH in the way lucidrains' FLASH-pytorch writes it (written here afresh, without its token
    shift, rotary embedding and relative-position bias): v and gate from one projection, the shared qk
    offset-scaled into four, padded to a multiple of the group and grouped 'b (g n) d -> b g n d',
    relu(sim) ** 2 with a triu masked_fill, causal lin_kv cumsum then F.pad(·, (0, 0, 0, 0, 1, -1)),
    non-causal lin_kv / n, each part folded back and cut to n before the sum."""

    def __init__(self, causal=False, rel_pos_bias=None):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.causal, self.rel_pos_bias = causal, rel_pos_bias
        self.to_hidden = torch.nn.Linear(DIM, 2 * E)
        self.to_qk = torch.nn.Linear(DIM, S)
        self.gamma = torch.nn.Parameter(torch.randn(4, S, generator=g) * 0.1 + 1)
        self.beta = torch.nn.Parameter(torch.randn(4, S, generator=g) * 0.1)
        self.to_out = torch.nn.Linear(E, DIM)

    def forward(self, x):
        b, n, g = x.shape[0], x.shape[1], G
        v, gate = F.silu(self.to_hidden(x)).chunk(2, dim=-1)
        qk = F.silu(self.to_qk(x))
        quad_q, lin_q, quad_k, lin_k = (qk.unsqueeze(-2) * self.gamma + self.beta).unbind(dim=-2)
        padding = (g - n % g) % g
        quad_q, quad_k, lin_q, lin_k, v = (F.pad(t, (0, 0, 0, padding), value=0.0).reshape(b, -1, g, t.shape[-1])
                                           for t in (quad_q, quad_k, lin_q, lin_k, v))
        sim = torch.einsum("... i d, ... j d -> ... i j", quad_q, quad_k) / g
        if self.rel_pos_bias is not None:
            sim = sim + self.rel_pos_bias(g)
        attn = F.relu(sim) ** 2
        if self.causal:
            attn = attn.masked_fill(torch.ones(g, g, dtype=torch.bool).triu(1), 0.0)
        quad_out = torch.einsum("... i j, ... j d -> ... i d", attn, v)
        if self.causal:
            lin_kv = torch.einsum("b g n d, b g n e -> b g d e", lin_k, v) / g
            lin_kv = F.pad(lin_kv.cumsum(dim=1), (0, 0, 0, 0, 1, -1), value=0.0)
            lin_out = torch.einsum("b g d e, b g n d -> b g n e", lin_kv, lin_q)
        else:
            lin_kv = torch.einsum("b g n d, b g n e -> b d e", lin_k, v) / n
            lin_out = torch.einsum("b g n d, b d e -> b g n e", lin_q, lin_kv)
        quad_out, lin_out = (t.reshape(b, -1, t.shape[-1])[:, :n] for t in (quad_out, lin_out))
        return self.to_out(gate * (quad_out + lin_out))


def optimize(module, target="ort"):
    torch.manual_seed(0)
    model = export(module, SHAPES, AXES)
    out, reports = optimize_model(model, target)
    return model, out, {r.name: r for r in reports}


@pytest.mark.parametrize("layer", [FLASHLayer, GroupedFLASH])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_layer_becomes_one_mixed_chunk_attention_node(layer, causal, rng):
    model, out, reports = optimize(layer(causal))
    report = reports["fuse-mixed-chunk-attention"]
    assert report.rewritten == 1, report.details
    assert "MixedChunkAttention(" in report.details[0]["change"]
    assert "linear attention over " + ("earlier chunks" if causal else "all chunks") in str(report.details)
    attrs = attrs_of(only_node(out, "attnx", "MixedChunkAttention"))
    assert (attrs["causal"], attrs["chunk_size"]) == (int(causal), G)
    assert attrs["quad_scale"] == pytest.approx(1 / G)
    # causal: / g is the spec's default; non-causal: / n, the unpadded length, folded into lin_k
    assert attrs["lin_scale"] == pytest.approx(0.0 if causal else 1.0)
    assert not [n for n in out.graph.node if n.domain == "attnx" and n.op_type != "MixedChunkAttention"]
    assert_same_outputs(model, out, SHAPES, AXES, rng, lengths=LENGTHS)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_with_a_relative_position_bias_keeps_it_in_the_chunks(causal, rng):
    """The in-chunk relu²'s [g, g] relative-position bias is the same in every chunk: one
    MixedChunkAttention with it as the op's in-chunk bias, outputs unchanged."""
    model, out, reports = optimize(GroupedFLASH(causal, rel_pos_bias=RelPosBias(reach=3)))
    (detail,) = reports["fuse-mixed-chunk-attention"].details
    assert detail["rewritten"] and "with the in-chunk bias" in detail["change"], detail
    assert len(only_node(out, "attnx", "MixedChunkAttention").input) == 6
    assert not [n for n in out.graph.node if n.op_type == "ReluSquaredAttention"]
    assert_same_outputs(model, out, SHAPES, AXES, rng, lengths=LENGTHS)


def test_an_inclusive_prefix_across_chunks_is_left_alone_with_the_reason(rng):
    model, out, reports = optimize(FLASHLayer(True, prefix="inclusive"))
    (detail,) = reports["fuse-mixed-chunk-attention"].details
    assert not detail["rewritten"]
    assert detail["why"].startswith("across_is_linear_part: ") and "exclusive prefix" in detail["why"]
    assert not [n for n in out.graph.node if n.op_type == "MixedChunkAttention"]
    assert_same_outputs(model, out, SHAPES, AXES, rng, lengths=LENGTHS)


def test_relu_cubed_in_the_chunks_is_left_alone_with_the_reason(rng):
    model, out, reports = optimize(FLASHLayer(False, power=3))
    (detail,) = reports["fuse-relu-squared-attention"].details
    assert detail["why"].startswith("relu_then_square: ")
    assert reports["fuse-mixed-chunk-attention"].matched == 0  # no relu² node to start from
    assert not [n for n in out.graph.node if n.domain == "attnx"]
    assert_same_outputs(model, out, SHAPES, AXES, rng, lengths=LENGTHS)


@pytest.mark.parametrize("layer", [FLASHLayer, GroupedFLASH])
def test_trt_form_of_flash_is_standard_ops_and_plugins(layer):
    _, out, _ = optimize(layer(True), "trt")
    assert {n.domain for n in out.graph.node} <= {"", "trt.plugins"}
    assert [n.op_type for n in out.graph.node if n.domain == "trt.plugins"] == ["MixedChunkAttention"]
    assert not out.functions


@pytest.mark.parametrize("causal", [False, True])
def test_grouped_flash_from_torchscript_becomes_one_mixed_chunk_attention_node(causal):
    """TorchScript's export of the FLASH-pytorch spelling: shape inference leaves v's feature axis unknown
    (the across part is probed with one of its own), and the fold's shape computations read the fused
    ReluSquaredAttention's output (they are evaluated through its function body)."""
    import numpy as np

    from helpers.public import assert_close_outputs, export_as

    torch.manual_seed(0)
    model = export_as(GroupedFLASH(causal), [torch.randn(2, 37, DIM)], "torchscript", 17, {0: {0: "b", 1: "n"}})
    out, reports = optimize_model(model)
    report = {r.name: r for r in reports}["fuse-mixed-chunk-attention"]
    assert report.rewritten == 1, report.details
    attrs = attrs_of(only_node(out, "attnx", "MixedChunkAttention"))
    assert (attrs["causal"], attrs["chunk_size"]) == (int(causal), G)
    rng = np.random.default_rng(0)
    assert_close_outputs(model, out, [{"x0": rng.standard_normal((2, n, DIM)).astype(np.float32)}
                                      for n in (1, 7, 37, 300)])
    trt, _ = optimize_model(model, "trt")
    assert [n.op_type for n in trt.graph.node if n.domain == "trt.plugins"] == ["MixedChunkAttention"]
