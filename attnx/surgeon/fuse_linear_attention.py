"""Fusion: linear attention already in linear form → one attnx `LinearAttention` node.

Patterns (the feature map q and k share, elu+1 or relu, is absorbed into the node):
  non-causal  Y = Q·(Kᵀ·V)              [/ (Q·Σ_m K + eps)]   (what `reassociate` leaves,
                                                               and how most code writes it)
  causal      Y = Q·CumSum_n(K ⊗ V)     [/ (Q·CumSum_n(K) + eps)]
Checks:
  cumsum_over_tokens     (causal) inclusive, forward CumSums over the query/key axis
  kv_contracts_keys      K·V sums over the key axis alone (for CumSum: over nothing, an outer
                         product per position); keys over two axes (a 2-D grid) are refused
  normaliser_matches     a division by q·z that follows is the normaliser q·Σk [+ eps] over the
                         same q and k: z a ReduceSum of k over the key axis (causal: its inclusive
                         CumSum over the tokens) and eps within the spec's range; a division by
                         anything else stays in the graph after an unnormalised node
  fits_linear_attention  at most [B, H] batch axes
Rewrite: LinearAttention(q, k, v; causal, feature_map, normalize, eps), layouts restored.
"""

from __future__ import annotations

import dataclasses

import onnx_graphsurgeon as gs

from attnx.errors import AttributeValueError
from attnx.surgeon import attnx_node
from attnx.surgeon.attention_pattern import reduce_axes
from attnx.surgeon.contraction import Contraction, Operand, products, read_contraction, relabel
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, int_attr, producer, scalar_constant
from attnx.surgeon.layout import fits
from attnx.surgeon.readers import plus_constant, shared_feature_map


@dataclasses.dataclass
class LinearForm:
    product: Contraction  # Y = Q·state (unified labels)
    q: Operand
    k: Operand
    v: Operand
    batch: str
    n: str
    m: str                # the key axis (causal: the token axis n)
    d: str
    e: str
    causal: bool
    summed: str           # the axes K·V sums over: m alone (causal: none) for linear attention
    cumsum: gs.Node | None = None
    division: gs.Node | None = None
    eps: float | None = None
    normaliser: str = "no normaliser follows: an unnormalised node"  # in words, what follows Q·state
    normaliser_ok: bool = True

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


def _inclusive_forward(cumsum: gs.Node) -> bool:
    return not int_attr(cumsum, "exclusive", 0) and not int_attr(cumsum, "reverse", 0)


def _key_sum_problem(tensor: gs.Tensor, form: LinearForm) -> str | None:
    """Why `tensor` is not Σ_m k (a ReduceSum over the key axis) or, for a causal form, k's inclusive
    forward CumSum over the tokens; None when it is."""
    node, k = producer(tensor), form.k
    want = "CumSum" if form.causal else "ReduceSum"
    if node is None or node.op not in ("CumSum", "ReduceSum"):
        return f"z = {tensor.name} is {'a graph input' if node is None else 'a ' + node.op}, not a {want} of k"
    if node.op != want:
        state = "a CumSum over the tokens" if form.causal else "a sum over every key"
        return f"z is a {node.op} of k where the state is {state}"
    labels = _labels_of(node.inputs[0], k)
    if labels is None:
        return f"z sums {node.inputs[0].name}, not k ({k.tensor.name})"
    if form.causal:
        axis = scalar_constant(node.inputs[1])
        if axis is None or labels[int(axis) % len(labels)] != form.m:
            return (f"z is a CumSum of k over axis {'computed at run time' if axis is None else int(axis)}, "
                    f"not its token axis {labels.index(form.m)}")
        return None if _inclusive_forward(node) else "z is an exclusive or reversed CumSum of k"
    axes = reduce_axes(node, len(labels))
    if axes is None or sorted(labels[a] for a in axes) != sorted(form.m):
        return (f"z sums k over axes {'computed at run time' if axes is None else axes}, "
                f"not its key axis {[labels.index(c) for c in form.m]}")
    return None


def _eps_problem(eps: float | None) -> str | None:
    """Why LinearAttention cannot take `eps` (0 and none become EPS_WHEN_ABSENT); None when it can."""
    if not eps:
        return None
    attr = attnx_node.LINEAR.attr("eps")
    try:
        attr.validate(attnx_node.LINEAR.name, eps)
    except AttributeValueError:
        return f"LinearAttention takes eps {attr.allowed()}; the graph adds {eps:g}"
    return None


def _normaliser(form: LinearForm) -> None:
    """Read the division that follows Q·state, if any, into `form`."""
    consumers = form.product.output.outputs
    if len(consumers) != 1 or consumers[0].op != "Div" or consumers[0].inputs[0] is not form.product.output:
        return
    division, den = consumers[0], consumers[0].inputs[1]
    plus = plus_constant(den)
    den, eps = (plus[0], scalar_constant(plus[1])) if plus is not None else (den, None)
    node = producer(den)
    if node is not None and node.op == "Unsqueeze":
        den = node.inputs[0]
    c = read_contraction(producer(den))
    zs = [] if c is None else [z for q_side, z in c.orders() if q_side.tensor is form.q.tensor]
    if not zs:
        form.normaliser = f"the division by {division.inputs[1].name} is no q·z: it stays after an unnormalised node"
        return
    problems = [_key_sum_problem(z.tensor, form) for z in zs]
    if None not in problems:
        form.normaliser_ok = False
        form.normaliser = f"the division by q·z that follows is not q·Σk: {problems[0]}"
        return
    eps_problem = _eps_problem(eps)
    form.normaliser_ok = eps_problem is None
    form.normaliser = (f"divided by q·Σk + {eps:g}" if eps else "divided by q·Σk") + (
        "" if eps_problem is None else f": {eps_problem}")
    if form.normaliser_ok:
        form.division, form.eps = division, eps


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
    summed = "".join(c for c in k.labels if c in inner.contracted)
    e_labels = [c for c in v.labels if c not in k.labels]
    if causal:
        n = m = state.labels[token_axis % len(state.labels)]
    else:
        only_q = [c for c in q.labels if c not in state.labels]
        if len(only_q) != 1 or not summed:
            return None
        n, m = only_q[0], summed
    if len(e_labels) != 1:
        return None
    e = e_labels[0]
    batch = "".join(c for c in p.out if c not in (n, e))
    keys = set(summed) | set(m)
    want = {"q": set(batch + n + d), "k": set(batch + d) | keys, "v": set(batch + e) | keys, "y": set(batch + n + e)}
    have = {"q": set(q.labels), "k": set(k.labels), "v": set(v.labels), "y": set(p.out)}
    if have != want:
        return None
    return LinearForm(p, q, k, v, batch, n, m, d, e, causal, summed)


def find_linear(graph: gs.Graph) -> list[LinearForm]:
    found = []
    for p in products(graph):
        for q, state in p.orders():
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


def _kv_contracts_keys(form: LinearForm) -> tuple[bool, str]:
    """The `kv_contracts_keys` check: (ok, why)."""
    axes = ("axis " if len(form.summed) == 1 else "axes ") + ", ".join(
        str(form.k.labels.index(c)) for c in form.summed)
    if form.causal:
        return (not form.summed, "K⊗V is an outer product per position" if not form.summed else
                f"the CumSum's K·V also sums over {axes} of k ({form.k.tensor.name}): "
                "not an outer product per position")
    ok = len(form.summed) == 1
    return ok, ("K·V sums over the key axis alone" if ok else
                f"K·V sums over {len(form.summed)} axes of k ({axes} of {form.k.tensor.name}); "
                "LinearAttention sums over one key axis")


class FuseLinearAttention(Pass):
    name = "fuse-linear-attention"
    summary = "Q(KᵀV) and the causal CumSum form, with feature map and normaliser → LinearAttention"

    def candidates(self, graph: gs.Graph):
        return ((form.product.node.name, (form,)) for form in find_linear(graph))

    def checks(self, match: Match, graph: gs.Graph, form: LinearForm) -> None:
        match.bound = form
        if form.causal:
            ok = _inclusive_forward(form.cumsum)
            if not match.check("cumsum_over_tokens", ok, "an inclusive forward CumSum of K⊗V over the tokens"
                               if ok else "the CumSum is exclusive or reversed: not the causal prefix j ≤ i"):
                return
        if not match.check("kv_contracts_keys", *_kv_contracts_keys(form)):
            return
        if not match.check("normaliser_matches", form.normaliser_ok, form.normaliser):
            return
        match.check("fits_linear_attention", *fits(form.batch, "LinearAttention"))

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
