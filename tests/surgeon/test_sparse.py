"""Masked softmax attention → SparseAttention: band and block masks written in plain torch, look-alikes."""

import pytest
import torch

from attnx.ops.sparse_attention import reference as sparse_reference
from attnx.surgeon import optimize_model
from helpers.graphs import QKV, QKV_AXES, assert_same_outputs, attrs_of, export, only_node
from helpers.attention_models import CausalLocalAttention


class BlockDiagonalAttention(torch.nn.Module):
    """TransNormer's DiagAttention in the additive-bias spelling: 0 inside a block of 4, -inf outside."""

    def forward(self, q, k, v):
        n = q.shape[2]
        block = torch.arange(n) // 4
        bias = torch.zeros(n, n).masked_fill(block[:, None] != block[None, :], float("-inf"))
        s = torch.einsum("bhnd,bhmd->bhnm", q, k) / 8 ** 0.5
        return torch.einsum("bhnm,bhme->bhne", torch.softmax(s + bias, -1), v)


class DataMaskedAttention(torch.nn.Module):
    """A mask from the values of q (keys whose first feature is negative): not a structure of positions."""

    def forward(self, q, k, v):
        s = q @ k.transpose(-1, -2)
        keep = (k[..., 0] > 0).unsqueeze(-2) | torch.eye(q.shape[2], dtype=torch.bool)
        return torch.softmax(s.masked_fill(~keep, float("-inf")), -1) @ v


class IrregularMaskAttention(torch.nn.Module):
    """Positions-only but no spec pattern: the diagonal plus keys with i·j divisible by 3."""

    def forward(self, q, k, v):
        i = torch.arange(q.shape[2])
        keep = ((i[:, None] * i[None, :]) % 3 == 0) | (i[:, None] == i[None, :])
        return torch.softmax((q @ k.transpose(-1, -2)).masked_fill(~keep, float("-inf")), -1) @ v


def optimize(model, target="ort"):
    out, reports = optimize_model(model, target)
    return out, {r.name: r for r in reports}


def test_plain_modules_match_the_sparse_reference(rng):
    q, k, v = (torch.randn(2, 2, 19, 8, generator=rng, dtype=torch.float64) for _ in range(3))
    want = sparse_reference(q, k, v, pattern="local", window=4, dilation=1, stride=1, block=1, causal=True,
                            scale=0.3)[0]
    torch.testing.assert_close(CausalLocalAttention()(q, k, v), want)
    want = sparse_reference(q, k, v, pattern="block", window=1, dilation=1, stride=1, block=4, causal=False,
                            scale=8 ** -0.5)[0]
    torch.testing.assert_close(BlockDiagonalAttention()(q, k, v), want)


@pytest.mark.parametrize("module,want", [
    (CausalLocalAttention(), {"pattern": "local", "window": 4, "causal": 1}),
    (BlockDiagonalAttention(), {"pattern": "block", "block": 4, "causal": 0}),
])
def test_band_and_block_masks_become_sparse_attention(module, want, rng):
    model = export(module, QKV, QKV_AXES)
    out, reports = optimize(model)
    assert reports["fuse-sparse-attention"].rewritten == 1, reports["fuse-sparse-attention"].details
    attrs = attrs_of(only_node(out, "attnx", "SparseAttention"))
    assert {key: attrs[key] for key in want} == want
    assert not any(n.op_type in ("Softmax", "MatMul", "Einsum") for n in out.graph.node)
    # past the export length and past the window and block sizes, where the mask matters
    assert_same_outputs(model, out, QKV, QKV_AXES, rng, lengths=(1, 7, 37, 100))


@pytest.mark.parametrize("module,check", [
    (DataMaskedAttention(), "mask_from_lengths"),
    (IrregularMaskAttention(), "mask_is_sparse_pattern"),
])
def test_masks_that_are_no_spec_pattern_are_left_alone(module, check):
    model = export(module, QKV, QKV_AXES)
    out, reports = optimize(model)
    (detail,) = reports["fuse-sparse-attention"].details
    assert not detail["rewritten"] and detail["why"].startswith(check), detail
    assert not any(n.domain == "attnx" for n in out.graph.node)


def test_trt_form_of_local_attention_is_standard_ops_and_the_plugin():
    out, _ = optimize(export(CausalLocalAttention(), QKV, QKV_AXES), "trt")
    assert {n.domain for n in out.graph.node} == {"trt.plugins"}
    assert [n.op_type for n in out.graph.node] == ["SparseAttention"]
