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

Where spellings vary too much, values are read by evaluation (attnx.surgeon.evaluate):
`scale_factor` takes a scale computed from input shapes (1/√d from Shape) when it is the same at
every probe length; `read_score_mask` evaluates a mask that depends on lengths only at
MASK_PROBE_LENGTHS and says whether it keeps everything, j ≤ i, or some other pattern (any value
≤ MASKED_AT counts as masked), or that it depends on input values (→ Attention's attn_mask).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from attnx.surgeon.evaluate import shape_only, values_at_lengths
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
    return step.inputs[0], keep_true, scalar_through_casts(step.inputs[2] if keep_true else step.inputs[1])


def scalar_through_casts(tensor: gs.Tensor) -> float | None:
    """The number a one-element constant holds, read through Cast, CastLike (torch writes masked_fill's
    fill as CastLike(Constant, scores)), Identity and Expand; None when it is computed otherwise."""
    for _ in range(4):
        if (value := scalar_constant(tensor)) is not None:
            return value
        node = producer(tensor)
        if node is None or node.op not in ("Cast", "CastLike", "Identity", "Expand"):
            return None
        tensor = node.inputs[0]
    return None


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


# --- masks and scales read by evaluation (the softmax fusion) -------------------------------------
# an additive value this negative (or a Where fill) masks a score: softmax's exp underflows to 0 in
# float32 for any score below 1e4 in size, so 0/−1e4, 0/−finfo.max and 0/−inf masks all read alike
MASKED_AT = -1e4
# lengths the mask sub-graph is evaluated at: 1, a prime, and lengths beyond common windows (a
# sliding window of w ≥ 2053 keys cannot be told from a causal mask by these probes)
MASK_PROBE_LENGTHS = (1, 7, 300, 2053)
PASS_THROUGH_AFTER_SOFTMAX = ("Cast", "Identity", "Dropout")
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}


def keeps_values(step: gs.Node) -> bool:
    """True for a step that leaves float data as it is in inference: Identity, Dropout not in
    training mode, Cast or CastLike to a float type."""
    if step.op == "Identity":
        return True
    if step.op == "Cast":
        return int(step.attrs.get("to", 0)) in FLOAT_TYPES
    if step.op == "CastLike":  # `.type_as(x)`: a Cast to x's type
        target = step.inputs[1].dtype if len(step.inputs) > 1 else None
        return target is not None and np.dtype(target).kind == "f"
    if step.op == "Dropout":
        if len(step.inputs) < 3 or not step.inputs[2].name:
            return True
        mode = constant_value(step.inputs[2])
        return mode is not None and not bool(mode.reshape(-1)[0])
    return False


def lengths_scalar(graph: gs.Graph, tensor: gs.Tensor) -> float | None:
    """The value of a one-element tensor computed from input shapes only (1/√d from Shape) when it is
    the same at every probe length; None otherwise."""
    if (value := scalar_constant(tensor)) is not None:
        return value
    if not is_scalar_shaped(tensor) or not shape_only(tensor, graph):
        return None
    values = values_at_lengths(graph, tensor, MASK_PROBE_LENGTHS[1:])
    if values is None or any(v.size != 1 for v in values):
        return None
    first = float(values[0].reshape(()))
    return first if all(float(v.reshape(())) == first for v in values) else None


def scale_factor(graph: gs.Graph, step: gs.Node, data: gs.Tensor) -> float | None:
    """f with step(data) = f·data for a Mul/Div by a constant or a length-only scalar; None otherwise."""
    s = scalar_operand(step, data)
    value = None if s is None else lengths_scalar(graph, s)
    if value is None or value == 0 or not np.isfinite(value):
        return None
    return value if step.op == "Mul" else 1.0 / value


@dataclasses.dataclass(frozen=True)
class ScoreMask:
    """A mask on the scores: `kind` "none" (keeps everything), "causal" (keeps j ≤ i), "pattern"
    (another length-only pattern, `why` says which), "input" (depends on input values: `tensor`
    goes to Attention's attn_mask as it is, additive float or bool keep-mask), "bad" (not a mask)."""

    kind: str
    why: str
    tensor: gs.Tensor | None = None
    additive: bool = True
    keep_true: bool = True       # of a Where: whether its mask is true where scores are kept
    fill: float | None = None    # of a Where: the value masked scores get


def _keep_matrices(value: np.ndarray, labels: str, n: str, m: str, length: int) -> np.ndarray | None:
    """The mask's keep matrices [·, n, m] at `length`, or None when its axes do not fit the scores."""
    if value.ndim > len(labels):
        return None
    value = value.reshape((1,) * (len(labels) - value.ndim) + value.shape)
    value = np.moveaxis(value, [labels.index(n), labels.index(m)], [-2, -1])
    if value.shape[-2] not in (1, length) or value.shape[-1] not in (1, length):
        return None
    value = np.broadcast_to(value, value.shape[:-2] + (length, length))
    return value.reshape(-1, length, length)


def _describe(keep: np.ndarray) -> str:
    n = keep.shape[-1]
    for offset in range(-3, 4):
        if offset and np.array_equal(keep, np.tril(np.ones((n, n), bool), offset)):
            return f"a causal triangle shifted by {offset} (keeps j ≤ i{offset:+d})"
    if np.array_equal(keep, np.triu(np.ones((n, n), bool))):
        return "an anti-causal triangle (keeps j ≥ i)"
    return f"keeps {int(keep.sum())} of {keep.size} scores at length {n}"


def classify_keep(keeps: list[np.ndarray], lengths) -> tuple[str, str]:
    """("none" | "causal" | "pattern", why) for keep matrices [·, L, L] at each of `lengths`."""
    if all(k.all() for k in keeps):
        return "none", f"the mask keeps every score at lengths {', '.join(map(str, lengths))}"
    if all(np.array_equal(k, np.broadcast_to(np.tril(np.ones((n, n), bool)), k.shape)) for k, n in zip(keeps, lengths)):
        return "causal", f"the mask keeps j ≤ i at lengths {', '.join(map(str, lengths))}"
    bad = next((k, n) for k, n in zip(keeps, lengths)
               if not (k == k[:1]).all() or not np.array_equal(k[0], np.tril(np.ones((n, n), bool))))
    k, n = bad
    what = "differs across batch/heads" if not (k == k[:1]).all() else _describe(k[0])
    return "pattern", (f"the mask, evaluated at length {n}, is not causal (j ≤ i) nor all-keep: {what} "
                       f"(band/block patterns are fuse-sparse-attention's)")


def read_score_mask(graph: gs.Graph, step: gs.Node, data: gs.Tensor, labels: str, n: str, m: str) -> ScoreMask | None:
    """The mask an Add or a Where applies to the scores `data` (axis labels `labels`), read by evaluating
    the mask sub-graph at several lengths when it depends on lengths only; None for other steps."""
    if step.op == "Add" and len(step.inputs) == 2:
        mask, additive, keep_true = other_input(step, data), True, False
    elif (found := where_mask(step, data)) is not None:
        mask, keep_true, fill = found
        additive = False
        if fill is None or fill > MASKED_AT:
            return ScoreMask("bad", f"Where fills masked scores with {fill if fill is not None else 'a computed value'}"
                                    f", not a value ≤ {MASKED_AT:g}")
    else:
        return None
    if constant_value(mask) is None and not shape_only(mask, graph):
        if additive:
            return ScoreMask("input", "an additive float mask computed from input values", mask)
        return ScoreMask("input", f"a boolean mask (true where {'kept' if keep_true else 'masked'}) computed from "
                                  f"input values", mask, False, keep_true, fill)
    values = values_at_lengths(graph, mask, MASK_PROBE_LENGTHS)
    if values is None:
        return ScoreMask("bad", f"the mask {mask.name} depends on lengths only but could not be evaluated")
    keeps = []
    for value, length in zip(values, MASK_PROBE_LENGTHS):
        if additive:
            value = value.astype(np.float64)
            if not np.all((value == 0) | (value <= MASKED_AT)):
                odd = value[(value != 0) & (value > MASKED_AT)]
                return ScoreMask("bad", f"Add of a length-only bias with values such as {float(odd.flat[0]):g} "
                                        f"(a mask has only 0 and values ≤ {MASKED_AT:g})")
            keep = value == 0
        else:
            keep = value.astype(bool) if keep_true else ~value.astype(bool)
        keep = _keep_matrices(keep, labels, n, m, length)
        if keep is None:
            return ScoreMask("bad", f"the mask of shape {list(value.shape)} does not broadcast over the "
                                    f"(query, key) axes of the scores")
        keeps.append(keep)
    kind, why = classify_keep(keeps, MASK_PROBE_LENGTHS)
    return ScoreMask(kind, why)
