"""The translation of `attnx::rotary_embedding` (attnx.models.rope): ONNX RotaryEmbedding from opset 23.

torch 2.13's own `torch.onnx.ops.rotary_embedding` is written into the graph as
RotaryEmbedding-23 whatever the target opset, past the translation table, so an opset-18
file would fail the checker. attnx's op goes through the table instead: at opset 23 it is one
`RotaryEmbedding(x, cos, sin, interleaved=1)` node (x [B, H, N, D], caches [B, N, D/2], no
position_ids), below 23 the same rotation written out with standard ops.
"""

from __future__ import annotations

import torch
from onnxscript import opset18, opset23

from attnx.models import rope  # noqa: F401  (registers torch.ops.attnx.rotary_embedding)

ROTARY_OPSET = 23


def _rotary_embedding(x, cos, sin):
    return opset23.RotaryEmbedding(x, cos, sin, interleaved=1)


def _rotary_as_standard_ops(x, cos, sin):
    op = opset18
    last = op.Constant(value_ints=[-1])
    cos, sin = op.Unsqueeze(cos, op.Constant(value_ints=[1])), op.Unsqueeze(sin, op.Constant(value_ints=[1]))
    pairs = op.Reshape(x, op.Concat(op.Shape(x, start=0, end=3), op.Constant(value_ints=[-1, 2]), axis=0))
    even = op.Squeeze(op.Slice(pairs, op.Constant(value_ints=[0]), op.Constant(value_ints=[1]), last), last)
    odd = op.Squeeze(op.Slice(pairs, op.Constant(value_ints=[1]), op.Constant(value_ints=[2]), last), last)
    turned = op.Concat(op.Unsqueeze(op.Sub(op.Mul(even, cos), op.Mul(odd, sin)), last),
                       op.Unsqueeze(op.Add(op.Mul(even, sin), op.Mul(odd, cos)), last), axis=-1)
    return op.Reshape(turned, op.Shape(x))


def translations(opset: int) -> dict:
    """Entries for the exporter's translation table at `opset`."""
    fn = _rotary_embedding if opset >= ROTARY_OPSET else _rotary_as_standard_ops
    return {torch.ops.attnx.rotary_embedding.default: fn}
