"""The quadratic attention pattern: Y = post(Q·Kᵀ)·V, read through any spelling of the products.

`find_quadratic(graph)` returns one `QuadraticAttention` per second product whose left
factor comes, through elementwise nodes only, from a first product; the elementwise nodes
between them are the `steps`. Passes decide what the steps may be: reassociation accepts a
scalar scale, a causal mask and a row-sum normaliser; the softmax fusion wants a Softmax.
Labels are unified across both products: q [batch, n, d], k [batch, m, d], v [batch, m, e],
y [batch, n, e], whatever order the graph keeps the axes in.
"""

from __future__ import annotations

import dataclasses
import string

import onnx_graphsurgeon as gs

from attnx.surgeon.contraction import Contraction, Operand, products, read_contraction, relabel
from attnx.surgeon.framework import Match
from attnx.surgeon.graph import constant_value, is_scalar_shaped, producer, rank
from attnx.surgeon.readers import keeps_values, plus_constant

ELEMENTWISE_UNARY = {"Softmax", "Relu", "Exp", "Cast", "Neg", "Trilu", "Identity", "Sqrt", "Abs", "Sigmoid",
                     "Tanh", "Elu", "LeakyRelu", "Log", "Square", "Reciprocal", "Dropout"}
ELEMENTWISE_BINARY = {"Mul", "Div", "Add", "Sub", "Pow", "Max", "Min"}
MAX_STEPS = 16


@dataclasses.dataclass
class RowSum:
    """y / (Σ_m A + eps): `division` divides by `reduce` (a ReduceSum over the key axis) plus `eps`."""

    division: gs.Node
    reduce: gs.Node
    eps: gs.Tensor | None
    before_product: bool  # A / rowsum then ·V (else (A·V) / rowsum)


@dataclasses.dataclass
class QuadraticAttention:
    scores: Contraction            # S = Q·Kᵀ (unified labels)
    product: Contraction           # Y = A·V (unified labels)
    q: Operand
    k: Operand
    v: Operand
    a: Operand                     # A, the left factor of the second product
    batch: str
    n: str
    m: str
    d: str
    e: str
    steps: list[gs.Node]           # from S to A, S's side first
    row_sum: RowSum | None = None

    @property
    def output(self) -> gs.Tensor:
        """The tensor holding the attention result (after a row-sum division that follows ·V)."""
        if self.row_sum is not None and not self.row_sum.before_product:
            return self.row_sum.division.outputs[0]
        return self.product.output

    @property
    def out_labels(self) -> str:
        return self.product.out

    def step_inputs(self) -> list[tuple[gs.Node, gs.Tensor]]:
        """(step, the scores-carrying tensor it reads) for every step, S's side first."""
        return list(zip(self.steps, [self.scores.output, *(s.outputs[0] for s in self.steps[:-1])]))

    def reused_intermediates(self, also: tuple[gs.Node, ...] = ()) -> list[str]:
        """The N×N intermediates (scores and steps) that feed nodes outside the pattern and `also`."""
        allowed = {id(n) for n in [self.scores.node, *self.steps, self.product.node, *also]}
        return [t.name for node in [self.scores.node, *self.steps] for t in node.outputs
                if any(id(c) not in allowed and not _reads_only_type(c, t) for c in t.outputs)]

    def dim(self, label: str):
        """The size of axis `label` from shape analysis: int, symbol or None."""
        for op in (self.q, self.k, self.v):
            shape = op.tensor.shape
            if shape is not None and label in op.labels and len(shape) == len(op.labels):
                return shape[op.labels.index(label)]
        return None


def _reads_only_type(node: gs.Node, tensor: gs.Tensor) -> bool:
    """True when `node` reads only the shape or the type of `tensor` (Shape; CastLike's target): the
    values do not leak, so a rewrite keeps the graph's meaning."""
    if node.op == "Shape":
        return True
    return node.op == "CastLike" and node.inputs[0] is not tensor


def data_input(node: gs.Node) -> gs.Tensor | None:
    """The input of an elementwise node that carries the scores (not a scale, mask or constant)."""
    if node.op in ELEMENTWISE_UNARY:
        return node.inputs[0]
    if node.op == "Where":
        candidates = [t for t in node.inputs[1:] if constant_value(t) is None and not is_scalar_shaped(t)]
        return candidates[0] if len(candidates) == 1 else None
    if node.op in ELEMENTWISE_BINARY:
        a, b = node.inputs[0], node.inputs[1]
        if row_sum_of(b, a) is not None:
            return a
        small_a = constant_value(a) is not None or is_scalar_shaped(a)
        small_b = constant_value(b) is not None or is_scalar_shaped(b)
        if small_a != small_b:
            return b if small_a else a
        ra, rb = rank(a), rank(b)
        if ra is not None and rb is not None and ra != rb:
            return a if ra > rb else b  # a lower-rank operand broadcasts: a mask or a bias
        return a
    return None


def row_sum_of(tensor: gs.Tensor, scores: gs.Tensor) -> tuple[gs.Node, gs.Tensor | None] | None:
    """(ReduceSum node, eps tensor or None) when tensor = ReduceSum(scores, keepdims=1) [+ eps]."""
    plus = plus_constant(tensor)
    total, eps = plus if plus is not None else (tensor, None)
    node = producer(total)
    if node is None or node.op != "ReduceSum" or node.inputs[0] is not scores:
        return None
    if int(node.attrs.get("keepdims", 1)) != 1:
        return None
    return node, eps


def reduce_axes(node: gs.Node, rank_: int) -> list[int] | None:
    """The axes a Reduce* node reduces, non-negative; None when they are computed at run time."""
    if "axes" in node.attrs:
        axes = list(node.attrs["axes"])
    elif len(node.inputs) > 1 and node.inputs[1].name:
        value = constant_value(node.inputs[1])
        if value is None:
            return None
        axes = [int(x) for x in value.reshape(-1)]
    else:
        return list(range(rank_))
    return sorted(a % rank_ for a in axes)


def _walk_to_scores(tensor: gs.Tensor) -> tuple[Contraction, list[gs.Node]] | None:
    steps = []
    for _ in range(MAX_STEPS):
        node = producer(tensor)
        if node is None:
            return None
        first = read_contraction(node)
        if first is not None:
            return first, steps[::-1]
        data = data_input(node)
        if data is None:
            return None
        steps.append(node)
        tensor = data
    return None


def _fresh(used: set[str]) -> str:
    return next(c for c in string.ascii_uppercase + string.ascii_lowercase if c not in used)


def _unify(second: Contraction, a: Operand, v: Operand, first: Contraction, steps) -> QuadraticAttention | None:
    if len(first.out) != len(a.labels) or len(second.contracted) != 1:
        return None
    used = set(second.a.labels + second.b.labels + second.out)
    mapping = dict(zip(first.out, a.labels))
    for label in first.a.labels + first.b.labels:
        if label not in mapping:
            mapping[label] = _fresh(used | set(mapping.values()))
    first = relabel(first, mapping)
    (m,) = second.contracted
    only_a = [c for c in a.labels if c not in v.labels]
    only_v = [c for c in v.labels if c not in a.labels]
    if len(only_a) != 1 or len(only_v) != 1 or len(first.contracted) != 1:
        return None
    n, e, (d,) = only_a[0], only_v[0], tuple(first.contracted)
    batch = "".join(c for c in second.out if c not in (n, e))
    q, k = first.a, first.b
    if m in q.labels and n in k.labels:
        q, k = k, q
    want = {"q": set(batch + n + d), "k": set(batch + m + d), "v": set(batch + m + e), "y": set(batch + n + e)}
    have = {"q": set(q.labels), "k": set(k.labels), "v": set(v.labels), "y": set(second.out)}
    if have != want or len(set(a.labels)) != len(batch) + 2:
        return None
    return QuadraticAttention(first, second, q, k, v, a, batch, n, m, d, e, steps)


def _row_sum_after(att: QuadraticAttention) -> RowSum | None:
    consumers = att.product.output.outputs
    if len(consumers) != 1 or consumers[0].op != "Div" or consumers[0].inputs[0] is not att.product.output:
        return None
    found = row_sum_of(consumers[0].inputs[1], att.a.tensor)
    if found is None:
        return None
    return RowSum(consumers[0], found[0], found[1], before_product=False)


def _row_sum_before(att: QuadraticAttention) -> RowSum | None:
    if not att.steps or att.steps[-1].op != "Div":
        return None
    division = att.steps[-1]
    found = row_sum_of(division.inputs[1], division.inputs[0])
    if found is None:
        return None
    return RowSum(division, found[0], found[1], before_product=True)


def find_quadratic(graph: gs.Graph) -> list[QuadraticAttention]:
    """Every (first product, elementwise steps, second product) in `graph`, in graph order."""
    found = []
    for second in products(graph):
        for a, v in second.orders():
            walked = _walk_to_scores(a.tensor)
            if walked is None:
                continue
            att = _unify(second, a, v, *walked)
            if att is None:
                continue
            att.row_sum = _row_sum_before(att) or _row_sum_after(att)
            found.append(att)
            break
    return found


def quadratic_candidates(graph: gs.Graph, claims):
    """(anchor, (att,)) for every quadratic attention that `claims(att)` accepts, anchored at its
    ·V product: the candidates of the passes on this pattern."""
    return ((att.product.node.name, (att,)) for att in find_quadratic(graph) if claims(att))


def check_scores_not_reused(match: Match, att: QuadraticAttention, also: tuple[gs.Node, ...] = ()) -> bool:
    """The `scores_not_reused` check: the N×N intermediates feed only the pattern (and `also`)."""
    reused = att.reused_intermediates(also)
    return match.check("scores_not_reused", not reused,
                       f"{', '.join(reused)} also feed(s) other nodes" if reused else "N×N intermediates feed only ·V")


def softmax_index(att: QuadraticAttention) -> int | None:
    """The index of the Softmax among the steps when only value-keeping steps (Cast to a float type,
    Identity, Dropout in inference) follow it; None otherwise."""
    for i in range(len(att.steps) - 1, -1, -1):
        if att.steps[i].op == "Softmax":
            return i
        if not keeps_values(att.steps[i]):
            return None
    return None


def softmax_over_keys(match: Match, att: QuadraticAttention) -> bool:
    """The `softmax_over_keys` check of a pattern with a Softmax (`softmax_index`)."""
    softmax = att.steps[softmax_index(att)]
    axis = int(softmax.attrs.get("axis", -1)) % len(att.a.labels)
    over_keys = att.a.labels[axis] == att.m
    return match.check("softmax_over_keys", over_keys,
                       f"Softmax over axis {axis} ({'keys' if over_keys else 'not the keys'})")
