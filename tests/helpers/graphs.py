"""Exporting plain-torch modules and comparing ONNX graphs before and after a pass."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnxruntime as ort
import torch

EXPORT_LEN = 16
# float32 reassociation and fusion change the order of sums of at most a few hundred terms
# (~1e-6 relative); a wrong mask, scale or normaliser moves outputs by 1e-2 or more
RTOL, ATOL = 1e-4, 1e-5


def export(module, shapes, seq_axes, opset=18):
    """module(*inputs of `shapes`) → ModelProto; axis 0 and seq_axes[i] of input i dynamic."""
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    g = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(*s, generator=g) for s in shapes)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), inputs, dynamo=True, opset_version=opset, verbose=False,
                                    input_names=[f"x{i}" for i in range(len(shapes))],
                                    dynamic_shapes=tuple({0: batch, a: seq} for a in seq_axes))
    return program.model_proto


def run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def feeds_at(shapes, seq_axes, n, rng):
    """Random float32 inputs like `shapes` with every sequence axis set to n (batch 2)."""
    out = {}
    for i, (shape, axis) in enumerate(zip(shapes, seq_axes)):
        shape = list(shape)
        shape[0], shape[axis] = 2, n
        out[f"x{i}"] = torch.randn(*shape, generator=rng).numpy()
    return out


def assert_same_outputs(before, after, shapes, seq_axes, rng, lengths=(1, 7, 37, 100)):
    """Both models agree in ONNX Runtime at lengths other than the export length, 1 included."""
    for n in lengths:
        feeds = feeds_at(shapes, seq_axes, n, rng)
        for a, b in zip(run(before, feeds), run(after, feeds)):
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=f"at sequence length {n}")


QKV3 = [(2, EXPORT_LEN, 8)] * 3  # [B, N, S]: single-head GAU-style inputs
AXES3 = (1, 1, 1)
QKV = [(2, 2, EXPORT_LEN, 8)] * 3  # [B, H, N, D]
QKV_AXES = (2, 2, 2)


def attrs_of(node):
    """A node's attributes as Python values (strings decoded)."""
    return {a.name: (a.s.decode() if a.type == a.STRING else a.f if a.type == a.FLOAT else a.i) for a in node.attribute}


def only_node(model, domain, op):
    """The one node of `domain::op` in the graph (fails, listing the graph's ops, when not exactly one)."""
    nodes = [n for n in model.graph.node if n.domain == domain and n.op_type == op]
    assert len(nodes) == 1, [n.op_type for n in model.graph.node]
    return nodes[0]
