"""MatMul and Einsum read as one thing: a two-operand contraction with labelled axes.

Exporters spell the same product many ways (`q @ k.transpose(-1, -2)`, `einsum("bhnd,bhmd->
bhnm")`, a Transpose node before a MatMul). Reading each as `a_labels,b_labels->out_labels`
with any Transpose on an operand absorbed into its labels lets a pattern ask one question
(which axis is contracted, which are kept) whatever the spelling.
"""

from __future__ import annotations

import dataclasses
import string

import onnx_graphsurgeon as gs

from attnx.surgeon.graph import producer, rank


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


def _absorb_transpose(tensor: gs.Tensor, labels: str) -> Operand:
    node = producer(tensor)
    if node is None or node.op != "Transpose" or "perm" not in node.attrs:
        return Operand(tensor, labels)
    perm = list(node.attrs["perm"])
    before = [""] * len(perm)
    for axis, src in enumerate(perm):  # output axis `axis` is input axis perm[axis]
        before[src] = labels[axis]
    return Operand(node.inputs[0], "".join(before))


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
    """The node as a contraction, or None when it is not a two-operand MatMul/Einsum we can label."""
    if node is None:
        return None
    if node.op == "MatMul":
        return _matmul(node)
    if node.op == "Einsum":
        return _einsum(node)
    return None


def products(graph: gs.Graph) -> list[Contraction]:
    """Every node of `graph` that reads as a contraction, in graph order."""
    return [c for c in map(read_contraction, graph.nodes) if c is not None]


def relabel(c: Contraction, mapping: dict[str, str]) -> Contraction:
    """The same contraction with labels renamed through `mapping` (labels not in it kept)."""
    def m(s: str) -> str:
        return "".join(mapping.get(ch, ch) for ch in s)

    return Contraction(c.node, Operand(c.a.tensor, m(c.a.labels)), Operand(c.b.tensor, m(c.b.labels)), m(c.out))
