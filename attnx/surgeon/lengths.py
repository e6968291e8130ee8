"""Recognising a sequence length read from a tensor's shape: `x.shape[i]` as exporters write it.

torch.onnx writes `n = q.shape[1]` as Shape(start=1, end=2) [→ Squeeze/Reshape] [→ Cast], or
as Gather(Shape(x), 1). `shape_axis(t)` returns the symbolic size of the axis it reads (the
dim of shape analysis: an int or a symbol), so a pattern can compare it with its own lengths.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from attnx.surgeon.graph import constant_value, int_attr, producer

_PASS_THROUGH = ("Cast", "Squeeze", "Reshape", "Identity", "Unsqueeze")


def _bounds(node: gs.Node, r: int) -> tuple[int, int]:
    """[start, end) of the axes a Shape node reads from a rank-r tensor, non-negative."""
    start = int_attr(node, "start", 0)
    end = int(node.attrs.get("end", r))
    return (start % r if r else 0), (end % r if end < 0 else min(end, r))


def _axis_of_shape(node: gs.Node, index: int):
    """The size of entry `index` of Shape(x) (negative counts from the end of what it reads)."""
    source = node.inputs[0]
    if source.shape is None:
        return None
    r = len(source.shape)
    start, end = _bounds(node, r)
    axis = start + index if index >= 0 else end + index
    return source.shape[axis] if start <= axis < end else None


def shape_axis(tensor: gs.Tensor):
    """The size (int or symbol) of the one axis whose length `tensor` holds; None when not a length."""
    node = producer(tensor)
    while node is not None and node.op in _PASS_THROUGH:
        tensor = node.inputs[0]
        node = producer(tensor)
    if node is None:
        return None
    if node.op == "Shape":
        if node.inputs[0].shape is None:
            return None
        start, end = _bounds(node, len(node.inputs[0].shape))
        return _axis_of_shape(node, 0) if end - start == 1 else None
    if node.op == "Gather":
        shape_node = producer(node.inputs[0])
        index = constant_value(node.inputs[1])
        if shape_node is None or shape_node.op != "Shape" or index is None or index.size != 1:
            return None
        return _axis_of_shape(shape_node, int(index.reshape(())))
    return None
