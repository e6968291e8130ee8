"""Attention over more than two batch axes ([B, G, H, N, D]: heads grouped in their own axis, as some
grouped-query code writes it, or FLASH's chunked heads): `layout.replace_qkv` runs the fused node with
the leading batch axes merged into one and reshapes the result back, expanding an operand that
broadcasts on a leading axis first. Outputs are compared in ONNX Runtime at batch 2 and lengths 1,
37 and 300 within 1e-4 relative (helpers.public.RTOL); the numeric guard checked each rewrite too.
"""

import onnx
import onnx.reference  # noqa: F401  (before attnx registers its schemas: see test_public_flash)
import pytest
import torch

from attnx.surgeon import optimize_model
from helpers.public import assert_close_outputs, export_as

B, G, H, D = 2, 2, 3, 8
LENGTHS = (1, 37, 300)


class GroupedSoftmax(torch.nn.Module):
    """softmax(q·kᵀ/√d)·v with q [B, G, H, N, D] and k, v [B, G|1, 1, N, D]: keys shared by the H heads
    of a group (`shared_groups`: one set for all groups too)."""

    def __init__(self, causal=False, shared_groups=False):
        super().__init__()
        self.causal, self.shared = causal, shared_groups

    def forward(self, q, k, v):
        if self.shared:
            k, v = k[:, :1], v[:, :1]
        s = (q @ k.transpose(-1, -2)) * D ** -0.5  # broadcast over H (and G when shared)
        if self.causal:
            n = q.shape[-2]
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        return s.softmax(-1) @ v


def inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed + n)
    return (torch.randn(B, G, H, n, D, generator=g), torch.randn(B, G, 1, n, D, generator=g),
            torch.randn(B, G, 1, n, D, generator=g))


def feeds(n):
    return {f"x{i}": t.numpy() for i, t in enumerate(inputs(n))}


@pytest.mark.parametrize("causal,shared", [(False, False), (True, False), (False, True)])
def test_softmax_over_three_batch_axes_becomes_one_attention(causal, shared):
    dyn = {i: {0: "batch", 3: "seq"} for i in range(3)}
    model = export_as(GroupedSoftmax(causal, shared), inputs(37), "dynamo", 23, dyn)
    out, reports = optimize_model(model)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Attention") == 1, ops
    attention = next(n for n in out.graph.node if n.op_type == "Attention")
    assert {a.name: onnx.helper.get_attribute_value(a) for a in attention.attribute}.get("is_causal", 0) == causal
    if shared:  # k broadcasts on a merged axis: expanded to the groups before the merge
        assert "Expand" in ops
    assert_close_outputs(model, out, [feeds(n) for n in LENGTHS])
