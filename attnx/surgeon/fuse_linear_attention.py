"""Fusion: linear attention already in linear form → one attnx `LinearAttention` node.

Patterns (the feature map q and k share, elu+1 or relu, is absorbed into the node):
  non-causal  Y = Q·(Kᵀ·V)              [/ (Q·Σ_m K + eps)]   (what `reassociate` leaves,
                                                               and how most code writes it)
  causal      Y = Q·CumSum_n(K ⊗ V)     [/ (Q·CumSum_n(K) + eps)]
Checks:
  kv_contracts_keys      K·V sums over the key axis alone (an outer product, for CumSum)
  cumsum_over_tokens     (causal) inclusive, forward CumSums over the query/key axis
  normaliser_matches     a following division is Q·Σk [+ eps] over the same q and k, else
                         it is left in the graph after an unnormalised node
  fits_linear_attention  at most [B, H] batch axes
Rewrite: LinearAttention(q, k, v; causal, feature_map, normalize, eps), layouts restored.
"""

from __future__ import annotations

import dataclasses

import onnx_graphsurgeon as gs

from attnx.surgeon import attnx_node
from attnx.surgeon.attention_pattern import reduce_axes
from attnx.surgeon.contraction import Contraction, Operand, read_contraction, relabel
from attnx.surgeon.feature_maps import shared_feature_map
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, int_attr, producer, scalar_constant
from attnx.surgeon.layout import fits


@dataclasses.dataclass
class LinearForm:
    product: Contraction  # Y = Q·state (unified labels)
    q: Operand
    k: Operand
    v: Operand
    batch: str
    n: str
    m: str
    d: str
    e: str
    causal: bool
    division: gs.Node | None = None
    eps: float | None = None
    cumsum: gs.Node | None = None

    @property
    def output(self) -> gs.Tensor:
        return self.division.outputs[0] if self.division is not None else self.product.output


def _labels_of(tensor: gs.Tensor, base: Operand) -> str | None:
    """Labels of `tensor` when it is base.tensor or a Transpose of it."""
    if tensor is base.tensor:
        return base.labels
    node = producer(tensor)
    if node is not None and node.op == "Transpose" and node.inputs[0] is base.tensor:
        return "".join(base.labels[p] for p in node.attrs["perm"])
    return None


def _key_sum(tensor: gs.Tensor, k: Operand, token: str, causal: bool) -> bool:
    """tensor = Σ_token k (ReduceSum), or its inclusive CumSum over token when causal."""
    node = producer(tensor)
    if node is None:
        return False
    op = "CumSum" if causal else "ReduceSum"
    if node.op != op:
        return False
    labels = _labels_of(node.inputs[0], k)
    if labels is None:
        return False
    if causal:
        axis = scalar_constant(node.inputs[1])
        return (axis is not None and labels[int(axis) % len(labels)] == token
                and not int_attr(node, "exclusive", 0) and not int_attr(node, "reverse", 0))
    axes = reduce_axes(node, len(labels))
    return axes is not None and [labels[a] for a in axes] == [token]


def _normaliser(form: LinearForm) -> None:
    consumers = form.product.output.outputs
    if len(consumers) != 1 or consumers[0].op != "Div" or consumers[0].inputs[0] is not form.product.output:
        return
    division, den = consumers[0], consumers[0].inputs[1]
    eps = None
    node = producer(den)
    if node is not None and node.op == "Add":
        for x, c in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
            if scalar_constant(c) is not None:
                den, eps = x, scalar_constant(c)
                break
    node = producer(den)
    if node is not None and node.op == "Unsqueeze":
        den = node.inputs[0]
    c = read_contraction(producer(den))
    if c is None:
        return
    for q_side, z_side in ((c.a, c.b), (c.b, c.a)):
        if q_side.tensor is form.q.tensor and _key_sum(z_side.tensor, form.k, form.m, form.causal):
            form.division, form.eps = division, eps
            return


def _unify(p: Contraction, q: Operand, state: Operand, inner: Contraction, token_axis: int | None) -> LinearForm | None:
    """Labels across both products; `token_axis` is the state's CumSum axis (causal) or None."""
    causal = token_axis is not None
    if len(inner.out) != len(state.labels):
        return None
    used = set(p.a.labels + p.b.labels + p.out)
    mapping = dict(zip(inner.out, state.labels))
    for label in inner.a.labels + inner.b.labels:
        mapping.setdefault(label, next(c for c in "KLMNOPQRSTUVWXYZ" if c not in used | set(mapping.values())))
    inner = relabel(inner, mapping)
    if len(p.contracted) != 1:
        return None
    (d,) = p.contracted
    k, v = (inner.a, inner.b) if d in inner.a.labels else (inner.b, inner.a)
    if causal:
        if inner.contracted:
            return None  # the causal state is an outer product per position
        n = m = state.labels[token_axis % len(state.labels)]
        e_labels = [c for c in v.labels if c not in k.labels]
    else:
        if len(inner.contracted) != 1:
            return None
        (m,) = inner.contracted
        only_q = [c for c in q.labels if c not in state.labels]
        e_labels = [c for c in v.labels if c not in k.labels]
        if len(only_q) != 1 or len(e_labels) != 1:
            return None
        n = only_q[0]
    e = e_labels[0]
    batch = "".join(c for c in p.out if c not in (n, e))
    want = {"q": set(batch + n + d), "k": set(batch + m + d), "v": set(batch + m + e), "y": set(batch + n + e)}
    have = {"q": set(q.labels), "k": set(k.labels), "v": set(v.labels), "y": set(p.out)}
    if have != want:
        return None
    return LinearForm(p, q, k, v, batch, n, m, d, e, causal)


def find_linear(graph: gs.Graph) -> list[LinearForm]:
    found = []
    for node in graph.nodes:
        p = read_contraction(node)
        if p is None:
            continue
        for q, state in ((p.a, p.b), (p.b, p.a)):
            source = producer(state.tensor)
            causal = source is not None and source.op == "CumSum"
            inner = read_contraction(producer(source.inputs[0]) if causal else source)
            axis = scalar_constant(source.inputs[1]) if causal else None
            if inner is None or (causal and axis is None):
                continue
            form = _unify(p, q, state, inner, None if axis is None else int(axis))
            if form is None:
                continue
            form.cumsum = source if causal else None
            _normaliser(form)
            found.append(form)
            break
    return found


class FuseLinearAttention(Pass):
    name = "fuse-linear-attention"
    summary = "Q(KᵀV) and the causal CumSum form, with feature map and normaliser → LinearAttention"

    def find(self, graph: gs.Graph) -> list[Match]:
        matches = []
        for form in find_linear(graph):
            match = Match(form.product.node.name, form)
            if form.causal:
                ok = not int_attr(form.cumsum, "exclusive", 0) and not int_attr(form.cumsum, "reverse", 0)
                if not match.check("cumsum_over_tokens", ok, "an inclusive forward CumSum of K⊗V over the tokens"
                                   if ok else "the CumSum is exclusive or reversed: not the causal prefix j ≤ i"):
                    matches.append(match)
                    continue
            else:
                match.check("kv_contracts_keys", True, "K·V sums over the key axis alone")
            match.check("normaliser_matches", True, "divided by q·Σk" + (f" + {form.eps:g}" if form.eps else "")
                        if form.division is not None else "no normaliser follows: an unnormalised node")
            match.check("fits_linear_attention", *fits(form.batch, "LinearAttention"))
            matches.append(match)
        return matches

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        form: LinearForm = match.bound
        emit = Emitter(graph, f"attnx_fuse_linear/{form.product.node.name}")
        fm, q_in, k_in = shared_feature_map(form.q.tensor, form.k.tensor)
        attrs = {"causal": form.causal, "feature_map": fm, "normalize": form.division is not None}
        if form.division is not None:
            attrs["eps"] = form.eps if form.eps else attnx_node.EPS_WHEN_ABSENT
        what = attnx_node.emit_linear_attention(
            emit, q=Operand(q_in, form.q.labels), k=Operand(k_in, form.k.labels), v=form.v, batch=form.batch,
            n=form.n, m=form.m, d=form.d, e=form.e, out=form.output, out_labels=form.product.out, attrs=attrs)
        return f"{'causal CumSum form' if form.causal else 'Q(KᵀV)'} → LinearAttention({what})"
