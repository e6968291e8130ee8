"""MatMul and Einsum read as one thing: a two-operand contraction with labelled axes.

Exporters spell the same product many ways (`q @ k.transpose(-1, -2)`, `einsum("bhnd,bhmd->
bhnm")`, a Transpose node before a MatMul). Reading each as `a_labels,b_labels->out_labels`
with any Transpose on an operand absorbed into its labels lets a pattern ask one question
(which axis is contracted, which are kept) whatever the spelling.

Broadcast products are read too: `k.unsqueeze(-1) * v.unsqueeze(-2)` is the outer product
"...nd,...ne->...nde" (a Mul where each operand has an axis the other lacks, at least one of them
made by an Unsqueeze), and `(q.unsqueeze(-1) * kv).sum(-2)` is "...nd,...nde->...ne" (a
ReduceSum, keepdims 0, over axes both factors of a Mul have; `(q * z).sum(-1)` is the row-wise
"...nd,...nd->...n"). The
Contraction's node is then the Mul or the ReduceSum, its output that node's output. An operand's
Unsqueeze is absorbed (the inserted axis has no label on that operand), and so are
Transpose·Transpose and Unsqueeze·Squeeze round trips that give back the tensor's own axes.
"""

from __future__ import annotations

import dataclasses
import string

import numpy as np
import onnx_graphsurgeon as gs

from attnx.surgeon.graph import constant_value, producer, rank


@dataclasses.dataclass(frozen=True)
class Operand:
    """A contraction input: `tensor` (before any absorbed Transpose) and one label per axis."""

    tensor: gs.Tensor
    labels: str


@dataclasses.dataclass(frozen=True)
class Contraction:
    """`node` computes einsum(f"{a.labels},{b.labels}->{out}") of its two operands."""

    node: gs.Node
    a: Operand
    b: Operand
    out: str

    @property
    def contracted(self) -> set[str]:
        return (set(self.a.labels) & set(self.b.labels)) - set(self.out)

    @property
    def output(self) -> gs.Tensor:
        return self.node.outputs[0]

    def orders(self) -> tuple[tuple[Operand, Operand], tuple[Operand, Operand]]:
        """(a, b) and (b, a): a pattern that names the two factors tries both."""
        return (self.a, self.b), (self.b, self.a)


def _axes_of(node: gs.Node, out_rank: int | None) -> list[int] | None:
    """The constant axes of an Unsqueeze/Squeeze, non-negative for a tensor of rank `out_rank`."""
    if "axes" in node.attrs:
        axes = list(node.attrs["axes"])
    elif len(node.inputs) > 1 and node.inputs[1].name:
        value = constant_value(node.inputs[1])
        if value is None:
            return None
        axes = [int(a) for a in np.ravel(value)]
    else:
        return None
    if out_rank is None:
        return None
    return sorted(a % out_rank for a in axes)


def _round_trip(tensor: gs.Tensor) -> gs.Tensor:
    """`tensor` before Transpose·Transpose, Unsqueeze·Squeeze or Squeeze·Unsqueeze pairs that undo each other."""
    while True:
        outer = producer(tensor)
        inner = producer(outer.inputs[0]) if outer is not None and outer.inputs else None
        if outer is None or inner is None:
            return tensor
        if outer.op == inner.op == "Transpose" and "perm" in outer.attrs and "perm" in inner.attrs:
            po, pi = list(outer.attrs["perm"]), list(inner.attrs["perm"])
            if len(po) != len(pi) or [pi[p] for p in po] != list(range(len(po))):
                return tensor
        elif {outer.op, inner.op} == {"Squeeze", "Unsqueeze"}:
            wide = inner.outputs[0] if inner.op == "Unsqueeze" else inner.inputs[0]
            if _axes_of(outer, rank(wide)) is None or _axes_of(outer, rank(wide)) != _axes_of(inner, rank(wide)):
                return tensor
        else:
            return tensor
        tensor = inner.inputs[0]


def _absorb_transpose(tensor: gs.Tensor, labels: str) -> Operand:
    tensor = _round_trip(tensor)
    node = producer(tensor)
    if node is None or node.op != "Transpose" or "perm" not in node.attrs:
        return Operand(tensor, labels)
    perm = list(node.attrs["perm"])
    if len(perm) != len(labels):
        return Operand(tensor, labels)
    before = [""] * len(perm)
    for axis, src in enumerate(perm):  # output axis `axis` is input axis perm[axis]
        before[src] = labels[axis]
    return Operand(_round_trip(node.inputs[0]), "".join(before))


def _broadcast_operand(tensor: gs.Tensor, labels: str) -> tuple[Operand, bool] | None:
    """`tensor` (labels right-aligned from the product's) with its Unsqueezes absorbed: (operand,
    whether an Unsqueeze was absorbed); None when a rank is unknown or an axis is a size-1 broadcast
    that no Unsqueeze made (its label would stand for two sizes)."""
    r = rank(tensor)
    if r is None or r > len(labels):
        return None
    labels = labels[len(labels) - r:]
    unsqueezed = False
    while (node := producer(_round_trip(tensor))) is not None and node.op == "Unsqueeze":
        axes = _axes_of(node, rank(node.outputs[0]))
        if axes is None:
            break
        labels = "".join(c for i, c in enumerate(labels) if i not in axes)
        tensor, unsqueezed = node.inputs[0], True
    tensor = _round_trip(tensor)
    if rank(tensor) != len(labels):
        return None
    return _absorb_transpose(tensor, labels), unsqueezed


def _broadcast_mul(node: gs.Node, need_unsqueeze: bool = True) -> Contraction | None:
    """A Mul of two Unsqueeze-broadcast factors (any two factors with `need_unsqueeze` False), as
    "a,b->ab" (every label kept)."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return None
    r = rank(node.outputs[0])
    if r is None or r < 2 or r > 20:
        return None
    out = string.ascii_lowercase[:r]
    sides = [_broadcast_operand(t, out) for t in node.inputs]
    if None in sides or (need_unsqueeze and not any(u for _, u in sides)):
        return None
    (a, _), (b, _) = sides
    if set(a.labels) | set(b.labels) != set(out) or min(len(a.labels), len(b.labels)) < 2:
        return None
    dims: dict[str, list] = {c: [d] for c, d in zip(out, node.outputs[0].shape or [None] * r)}
    for op in (a, b):
        for c, d in zip(op.labels, op.tensor.shape or [None] * len(op.labels)):
            dims[c].append(d)
    for ds in dims.values():
        ints = {d for d in ds if isinstance(d, int)}
        if len(ints) > 1 or (1 in ints and any(not isinstance(d, int) for d in ds if d is not None)):
            return None  # a size-1 axis no Unsqueeze made broadcasts: one label cannot name both sizes
    return Contraction(node, a, b, out)


def _outer_product(node: gs.Node) -> Contraction | None:
    c = _broadcast_mul(node)
    if c is None or not (set(c.a.labels) - set(c.b.labels)) or not (set(c.b.labels) - set(c.a.labels)):
        return None  # each factor brings an axis of its own: an outer product, not a scaling
    return c


def _reduce_sum(node: gs.Node) -> Contraction | None:
    """ReduceSum(keepdims 0) of a broadcast Mul over axes both factors have."""
    if node.op != "ReduceSum" or int(node.attrs.get("keepdims", 1)) != 0:
        return None
    mul = producer(node.inputs[0])
    c = _broadcast_mul(mul, need_unsqueeze=False) if mul is not None else None
    if c is None:
        return None
    if "axes" in node.attrs:
        axes = list(node.attrs["axes"])
    elif len(node.inputs) > 1 and node.inputs[1].name and (value := constant_value(node.inputs[1])) is not None:
        axes = [int(a) for a in np.ravel(value)]
    else:
        return None
    if not axes:
        return None
    summed = {c.out[a % len(c.out)] for a in axes}
    if not summed <= set(c.a.labels) & set(c.b.labels):
        return None
    return Contraction(node, c.a, c.b, "".join(ch for ch in c.out if ch not in summed))


def _matmul(node: gs.Node) -> Contraction | None:
    ra, rb = rank(node.inputs[0]), rank(node.inputs[1])
    if ra is None or rb is None or ra < 2 or rb < 2:
        return None
    batch_rank = max(ra, rb) - 2
    batch = string.ascii_lowercase[:batch_rank]
    i, j, k = "xyz"  # batch labels come from a–w, so these never collide
    a = batch[batch_rank - (ra - 2):] + i + j
    b = batch[batch_rank - (rb - 2):] + j + k
    return Contraction(node, _absorb_transpose(node.inputs[0], a), _absorb_transpose(node.inputs[1], b),
                       batch + i + k)


def _einsum(node: gs.Node) -> Contraction | None:
    equation = node.attrs.get("equation", "")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    equation = equation.replace(" ", "")
    if "->" not in equation or len(node.inputs) != 2:
        return None
    lhs, out = equation.split("->")
    terms = _expand_ellipsis(lhs.split(","), out, node.inputs)
    if terms is None:
        return None
    *terms, out = terms
    if len(terms) != 2 or any(len(set(t)) != len(t) for t in terms):
        return None  # a repeated label inside one operand is a diagonal, not a product
    return Contraction(node, _absorb_transpose(node.inputs[0], terms[0]),
                       _absorb_transpose(node.inputs[1], terms[1]), out)


def einsum_terms(node: gs.Node) -> tuple[list[str], str] | None:
    """(one term per input, output term) of an Einsum with "..." expanded; None when unreadable."""
    equation = node.attrs.get("equation", "")
    equation = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    if node.op != "Einsum" or "->" not in equation:
        return None
    lhs, out = equation.split("->")
    terms = _expand_ellipsis(lhs.split(","), out, node.inputs)
    if terms is None or len(terms) - 1 != len(node.inputs):
        return None
    return terms[:-1], terms[-1]


def _expand_ellipsis(terms: list[str], out: str, inputs) -> list[str] | None:
    """`terms` and `out` with "..." replaced by labels of its own (broadcast from the right, as
    einsum does; the operands' ranks say how many); None when a rank is unknown or the form is odd."""
    if "..." not in "".join(terms) + out:
        return [*terms, out]
    if len(terms) != len(inputs) or any(t.count(".") not in (0, 3) or "..." not in t and "." in t
                                        for t in [*terms, out]):
        return None
    widths = []
    for term, tensor in zip(terms, inputs):
        r = rank(tensor)
        if "..." in term and (r is None or r < len(term) - 3):
            return None
        widths.append(r - (len(term) - 3) if "..." in term else 0)
    free = [c for c in string.ascii_letters if c not in "".join(terms) + out][:max(widths)]
    return [t.replace("...", "".join(free[len(free) - w:])) for t, w in zip(terms, widths)] + \
        [out.replace("...", "".join(free))]


def read_contraction(node: gs.Node | None) -> Contraction | None:
    """The node as a contraction, or None when it is not a two-operand MatMul/Einsum, an outer-product
    Mul or a ReduceSum of a broadcast Mul that we can label."""
    if node is None:
        return None
    if node.op == "MatMul":
        return _matmul(node)
    if node.op == "Einsum":
        return _einsum(node)
    if node.op == "Mul":
        return _outer_product(node)
    if node.op == "ReduceSum":
        return _reduce_sum(node)
    return None


def products(graph: gs.Graph) -> list[Contraction]:
    """Every node of `graph` that reads as a contraction, in graph order."""
    return [c for c in map(read_contraction, graph.nodes) if c is not None]


def relabel(c: Contraction, mapping: dict[str, str]) -> Contraction:
    """The same contraction with labels renamed through `mapping` (labels not in it kept)."""
    def m(s: str) -> str:
        return "".join(mapping.get(ch, ch) for ch in s)

    return Contraction(c.node, Operand(c.a.tensor, m(c.a.labels)), Operand(c.b.tensor, m(c.b.labels)), m(c.out))
