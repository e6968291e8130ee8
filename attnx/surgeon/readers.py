"""Reading what stands around attention's products: scales, masks, feature maps, eps.

Every pass asks the same questions of one step applied to the data it carries (the scores,
or q and k): is it a scale (`scalar_operand`, `constant_factor`), a mask (`where_mask`,
`causal_mask`, `triangle`), a feature map (`feature_map_of`, `shared_feature_map`), a
constant added (`plus_constant`)? The passes differ only in what they accept, and say so by
their arguments.

Exporters write a causal mask as Trilu of ones, its negation (Not of a strict upper
triangle), a float 0/1 triangle, or a constant; `triangle(mask)` says which triangle a mask
tensor keeps, for the last two axes of the tensor it is applied to. φ(x) = elu(x) + 1 is
exported as Add(Elu(x, alpha=1), 1), relu as Relu(x); anything else applied to q and k stays
in the graph and the node takes φ(x) as it is (`identity`).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from attnx.surgeon.graph import constant_value, int_attr, is_scalar_shaped, producer, rank, scalar_constant

LOWER = "lower"              # True/1 where j ≤ i
STRICT_UPPER = "strict_upper"  # True/1 where j > i
# a finite fill this negative vanishes in softmax exactly as -inf does (exp underflows to 0),
# and before a Relu exactly as 0 does
MASK_FILL_MAX = -1e9
ZERO_FILL, NEG_INF_FILL = "zero", "-inf"


def other_input(step: gs.Node, data: gs.Tensor) -> gs.Tensor:
    """The input of a binary step that is not `data`."""
    return step.inputs[1] if step.inputs[0] is data else step.inputs[0]


def scalar_operand(step: gs.Node, data: gs.Tensor) -> gs.Tensor | None:
    """The scalar s (constant or computed) of data·s, s·data or data/s; None otherwise (s / data
    does not scale data)."""
    if step.op not in ("Mul", "Div") or len(step.inputs) != 2:
        return None
    if step.op == "Div" and step.inputs[0] is not data:
        return None
    s = other_input(step, data)
    return s if is_scalar_shaped(s) else None


def constant_factor(step: gs.Node, data: gs.Tensor) -> float | None:
    """The constant f with step(data) = f·data (c for data·c and c·data, 1/c for data/c); None when
    the step is no scale, its scale is computed, or it is 0."""
    s = scalar_operand(step, data)
    value = None if s is None else scalar_constant(s)
    if value is None or value == 0:
        return None
    return value if step.op == "Mul" else 1.0 / value


def plus_constant(tensor: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor] | None:
    """(x, c) when tensor = x + c or c + x with c a constant of one element (an eps); else None."""
    node = producer(tensor)
    if node is None or node.op != "Add":
        return None
    for x, c in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
        if scalar_constant(c) is not None:
            return x, c
    return None


def fill_kind(value: float | None) -> str | None:
    """ZERO_FILL, NEG_INF_FILL (at most MASK_FILL_MAX) or None for the fill of a masked step."""
    if value == 0.0:
        return ZERO_FILL
    if value is not None and value <= MASK_FILL_MAX:
        return NEG_INF_FILL
    return None


def where_mask(step: gs.Node, data: gs.Tensor) -> tuple[gs.Tensor, bool, float | None] | None:
    """(mask, keeps where true, fill) of Where(mask, data, fill) or Where(mask, fill, data); fill
    None when it is computed. None for any other step."""
    if step.op != "Where" or all(t is not data for t in step.inputs[1:]):
        return None
    keep_true = step.inputs[1] is data
    return step.inputs[0], keep_true, scalar_constant(step.inputs[2] if keep_true else step.inputs[1])


def causal_where(step: gs.Node, data: gs.Tensor, fills: set[str]) -> bool | None:
    """True for Where(causal mask, data, fill) with a fill kind in `fills`, False for such a Where
    with another mask, None when the step is no such Where."""
    found = where_mask(step, data)
    if found is None or fill_kind(found[2]) not in fills:
        return None
    mask, keep_true, _ = found
    return triangle(mask) == (LOWER if keep_true else STRICT_UPPER)


def causal_mask(step: gs.Node, data: gs.Tensor, fills: set[str]) -> bool | None:
    """True for a step that keeps j ≤ i of `data` — Trilu, Where with a fill kind in `fills`, Mul
    by a 0/1 lower triangle —, False for such a step with another mask, None when it is no mask."""
    if step.op == "Trilu":
        return not int_attr(step, "upper", 1) and trilu_offset(step) == 0
    if step.op == "Where":
        return causal_where(step, data, fills)
    if step.op == "Mul":
        other = other_input(step, data)
        if (rank(other) or 0) >= 2 and not is_scalar_shaped(other):
            return triangle(other) == LOWER
    return None


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


def feature_map_of(tensor: gs.Tensor) -> tuple[str, gs.Tensor]:
    """(name, x) with tensor = φ_name(x), a `feature_map` LinearAttention knows; ("identity",
    tensor) when no known map computes it."""
    node = producer(tensor)
    if node is None:
        return "identity", tensor
    if node.op == "Relu":
        return "relu", node.inputs[0]
    if node.op == "Add":
        for elu_in, one in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
            elu = producer(elu_in)
            if (elu is not None and elu.op == "Elu" and float(elu.attrs.get("alpha", 1.0)) == 1.0
                    and scalar_constant(one) == 1.0):
                return "elu", elu.inputs[0]
    return "identity", tensor


def shared_feature_map(q: gs.Tensor, k: gs.Tensor) -> tuple[str, gs.Tensor, gs.Tensor]:
    """(name, q_in, k_in): the map both q and k go through, or identity on q and k themselves."""
    fq, q_in = feature_map_of(q)
    fk, k_in = feature_map_of(k)
    if fq == fk and fq != "identity":
        return fq, q_in, k_in
    return "identity", q, k
