"""Small reads and writes on an onnx-graphsurgeon graph that every pass shares.

Reads: a tensor's producer, its constant value, whether it is a scalar by its shape.
Writes: `Emitter` adds named nodes (`e.op("MatMul", a, b)` returns the output tensor) and
`take_over` makes a new subgraph produce an existing tensor, so the tensor keeps its name,
its consumers and its place among the graph outputs.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that computes `tensor`, or None for graph inputs and initializers."""
    return tensor.inputs[0] if tensor.inputs else None


def producer_op(tensor: gs.Tensor, op: str) -> gs.Node | None:
    node = producer(tensor)
    return node if node is not None and node.op == op else None


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of an initializer or of a Constant node's output; None when it is computed."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        return np.asarray(node.attrs["value"].values)
    return None


def scalar_constant(tensor: gs.Tensor) -> float | None:
    """The number held by a constant with a single element, else None."""
    value = constant_value(tensor)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def is_scalar_shaped(tensor: gs.Tensor) -> bool:
    """True when shape analysis proves every axis has size 1 (rank 0 included)."""
    value = constant_value(tensor)
    if value is not None:
        return value.size == 1
    shape = tensor.shape
    return shape is not None and all(d == 1 for d in shape)


def rank(tensor: gs.Tensor) -> int | None:
    value = constant_value(tensor)
    if value is not None:
        return value.ndim
    return None if tensor.shape is None else len(tensor.shape)


def single_consumer(tensor: gs.Tensor) -> bool:
    """Used by one node only, and not a graph output (graph outputs have no consumer node)."""
    return len(tensor.outputs) == 1


def int_attr(node: gs.Node, name: str, default: int) -> int:
    return int(node.attrs.get(name, default))


class Emitter:
    """Appends nodes to `graph`, named `<prefix>/<op>_<i>` so a report and a viewer can find them."""

    def __init__(self, graph: gs.Graph, prefix: str):
        self.graph, self.prefix = graph, prefix
        self._ids = itertools.count()

    def op(self, op: str, *inputs, attrs: dict | None = None, domain: str | None = None,
           out: gs.Tensor | None = None) -> gs.Tensor:
        """One node `op(*inputs)`; numpy arrays become constants. Returns its (first) output."""
        name = f"{self.prefix}/{op}_{next(self._ids)}"
        outputs = [out] if out is not None else [f"{name}_out"]
        return self.graph.layer(op=op, name=name, inputs=list(inputs), outputs=outputs,
                                attrs=attrs or {}, domain=domain)[0]

    def ints(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    def transpose(self, tensor: gs.Tensor, perm: list[int], out: gs.Tensor | None = None) -> gs.Tensor:
        """Transpose, skipped when `perm` is the identity and no output tensor is imposed."""
        if perm == sorted(perm) and out is None:
            return tensor
        if perm == sorted(perm):
            return self.op("Identity", tensor, out=out)
        return self.op("Transpose", tensor, attrs={"perm": perm}, out=out)

    def relabel(self, tensor: gs.Tensor, have: str, want: str, out: gs.Tensor | None = None) -> gs.Tensor:
        """Permute the axes of `tensor`, labelled `have`, into the order `want`."""
        return self.transpose(tensor, [have.index(c) for c in want], out=out)


def take_over(old: gs.Tensor, new: gs.Tensor, emit: Emitter) -> None:
    """Make `old` the value of `new`, which a node just emitted computes and nothing reads yet.

    `old` keeps its name, its consumers and its place in graph.outputs; its former producer
    gets a fresh tensor in that slot (so a multi-output node keeps its output indices) and
    cleanup() removes it once nothing reads it.
    """
    for node in list(old.inputs):
        node.outputs[node.outputs.index(old)] = gs.Variable(f"{old.name}__replaced", dtype=old.dtype)
    maker = producer(new)
    if maker is None or new.outputs or new in emit.graph.outputs:
        emit.op("Identity", new, out=old)  # `new` is read elsewhere (or is an input): bind by a copy
        return
    maker.outputs[maker.outputs.index(new)] = old
