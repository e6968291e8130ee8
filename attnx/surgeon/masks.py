"""Recognising causal masks: which spellings of "keep key j ≤ query i" a pattern accepts.

Exporters write a causal mask as Trilu of ones, its negation (Not of a strict upper
triangle), a float 0/1 triangle, or a constant. `triangle(mask)` says which triangle a
mask tensor keeps, for the last two axes of the tensor it is applied to.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from attnx.surgeon.graph import constant_value, int_attr, producer

LOWER = "lower"              # True/1 where j ≤ i
STRICT_UPPER = "strict_upper"  # True/1 where j > i


def _ones(tensor: gs.Tensor) -> bool:
    value = constant_value(tensor)
    if value is not None:
        return bool(np.all(value == 1))
    node = producer(tensor)
    if node is None:
        return False
    if node.op in ("Expand", "Cast", "Identity"):
        return _ones(node.inputs[0])
    if node.op == "ConstantOfShape":
        fill = node.attrs.get("value")
        return fill is not None and bool(np.all(np.asarray(fill.values) == 1))
    return False


def _constant_triangle(value: np.ndarray) -> str | None:
    if value.ndim < 2 or value.shape[-1] != value.shape[-2]:
        return None  # a square constant is a fixed length; the pattern checks it against n
    keep = value.astype(bool)
    lower = np.tril(np.ones(value.shape[-2:], dtype=bool))
    if np.array_equal(np.broadcast_to(keep, keep.shape), np.broadcast_to(lower, keep.shape)):
        return LOWER
    if np.array_equal(keep, np.broadcast_to(~lower, keep.shape)):
        return STRICT_UPPER
    return None


def trilu_offset(node: gs.Node) -> int | None:
    """The diagonal offset k of a Trilu node; None when it is computed at run time."""
    if len(node.inputs) < 2 or not node.inputs[1].name:
        return 0
    value = constant_value(node.inputs[1])
    return None if value is None else int(value.reshape(()))


def triangle(mask: gs.Tensor) -> str | None:
    """LOWER, STRICT_UPPER or None (not a triangle we can prove) for a bool or 0/1 mask."""
    value = constant_value(mask)
    if value is not None:
        return _constant_triangle(value)
    node = producer(mask)
    if node is None:
        return None
    if node.op in ("Cast", "Identity"):
        return triangle(node.inputs[0])
    if node.op == "Not":
        inner = triangle(node.inputs[0])
        return {LOWER: STRICT_UPPER, STRICT_UPPER: LOWER}.get(inner)
    if node.op == "Trilu" and _ones(node.inputs[0]):
        k = trilu_offset(node)
        upper = int_attr(node, "upper", 1)
        if not upper and k == 0:
            return LOWER
        if upper and k == 1:
            return STRICT_UPPER
    return None
