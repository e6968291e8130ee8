"""Fusion: linear attention already in linear form → one attnx `LinearAttention` node.

Patterns (the feature map q and k share, elu+1 or relu, is absorbed into the node):
  non-causal  Y = Q·(Kᵀ·V)              [/ (Q·Σ_m K + eps)]   (what `reassociate` leaves,
                                                               and how most code writes it)
  causal      Y = Q·CumSum_n(K ⊗ V)     [/ (Q·CumSum_n(K) + eps)]
whatever spells the products (`attnx.surgeon.contraction`: MatMul, Einsum, the broadcast outer
product `k.unsqueeze(-1) * v.unsqueeze(-2)` and `(q.unsqueeze(-1) * kv).sum(-2)`), also with the
normaliser multiplied in by one three-operand Einsum ('...de,...nd,...n->...ne' with 1/(q·z)).
Checks:
  state_read_by_one_product  (a CumSum of K⊗V or of per-bucket K·V that no product with q reads
                         as above) always fails: the report says where the state goes instead
  cumsum_over_tokens     (causal) inclusive, forward CumSums over the query/key axis
  kv_contracts_keys      K·V sums over the key axis alone (for CumSum: over nothing, an outer
                         product per position); keys over two axes (a 2-D grid) are refused
  normaliser_matches     a division by q·z that follows is the normaliser q·Σk [+ eps] over the
                         same q and k: z a ReduceSum of k over the key axis (causal: its inclusive
                         CumSum over the tokens) and eps within the spec's range. A z computed
                         from k alone some other way (the key sum bucketed: chunk sums' prefix
                         plus an in-chunk CumSum) is evaluated on random k at lengths 1 and 37,
                         batch 2, at scales 1 and 1e-4, against that sum (relative 1e-5); a division by
                         anything else stays in the graph after an unnormalised node; a clamped
                         denominator (max(q·z, eps), `clamp(min=eps)`) is refused: it is not q·z + eps
Rewrite: LinearAttention(q, k, v; causal, feature_map, normalize, eps), layouts restored.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs

from attnx.errors import AttributeValueError
from attnx.surgeon import attnx_node
from attnx.surgeon.attention_pattern import reduce_axes
from attnx.surgeon.contraction import Contraction, Operand, einsum_terms, products, read_contraction, relabel
from attnx.surgeon.evaluate import PROBE_SIZE, depends_only_on, evaluate_cut
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, constant_value, int_attr, producer, scalar_constant
from attnx.surgeon.readers import keeps_values, other_input, plus_constant, shared_feature_map


# a bucketed key sum is evaluated at these (length, scale of k): lengths 1 and 37 (no multiple of a
# chunk), k in [0.1, 1] and in [1e-5, 1e-4]. Float32 prefix sums of at most 37 terms agree with
# float64 to ~1e-6 relative at any scale; a key sum missing one chunk or one key is off by 1e-2 or
# more, and one with a constant added (Σk + eps, as performer-pytorch's causal form writes it) is off
# by eps/1e-4 or more at the small scale: it is not q·Σk + eps, since q·(Σk + eps) adds eps·Σq
PROBE_LENGTHS = ((1, 1.0), (37, 1.0), (37, 1e-4))
PROBE_RTOL = 1e-5


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
    inline_den: gs.Tensor | None = None  # a three-operand Einsum multiplies 1/den in
    normalised: bool = False              # a normaliser q·Σk [+ eps] was read
    normaliser_read_by_probe: bool = False  # z is a key sum computed otherwise (bucketed), read by evaluation

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
    while node is not None and keeps_values(node):  # `.type_as(q)` on the key sum
        tensor, node = node.inputs[0], producer(node.inputs[0])
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


def _probed_key_sum(graph: gs.Graph, form: LinearForm, den: Contraction, z: Operand) -> str | None:
    """Why z, computed from k alone but not as one ReduceSum/CumSum (a key sum bucketed into chunks:
    chunk sums' prefix plus an in-chunk CumSum, padding sliced off), is not Σ_m k (causal: its
    inclusive prefix over the tokens), evaluated on random k at PROBE_LENGTHS with batch 2; None when
    it is."""
    q_side = den.a if den.a.tensor is form.q.tensor else den.b
    mapping = dict(zip(q_side.labels, form.q.labels))
    if len(mapping) != len(form.q.labels) or any(ch not in mapping for ch in z.labels):
        return "z has an axis q does not have"
    z_labels = "".join(mapping[ch] for ch in z.labels)
    k = form.k
    want = set(k.labels) if form.causal else set(k.labels) - set(form.m)
    if set(z_labels) != want or len(z_labels) != len(want):
        return f"z has axes {sorted(z_labels)}, not k's {sorted(want)}"
    if not depends_only_on(z.tensor, k.tensor, graph):
        return "z reads graph inputs other than through k"
    shape = list(k.tensor.shape or [])
    if len(shape) != len(k.labels):
        return "k's shape is unknown"
    rng = np.random.default_rng(0)
    for length, scale in PROBE_LENGTHS:
        dims = [d if isinstance(d, int) else (length if k.labels[i] in form.m else 2 if i == 0 else PROBE_SIZE)
                for i, d in enumerate(shape)]
        probe = (scale * rng.uniform(0.1, 1.0, dims)).astype(np.float32)
        got = evaluate_cut(graph, [k.tensor], [z.tensor], [probe], length, 2)
        if got is None:
            return f"z could not be evaluated from k at length {length}"
        x = probe.astype(np.float64)
        axes = [k.labels.index(ch) for ch in form.m]
        ref = np.cumsum(x, axis=axes[0]) if form.causal else x.sum(axis=tuple(axes))
        ref_labels = k.labels if form.causal else "".join(ch for ch in k.labels if ch not in form.m)
        ref = np.einsum(f"{ref_labels}->{z_labels}", ref)
        if got[0].shape != ref.shape:
            return f"evaluated from k at length {length}, z has shape {list(got[0].shape)}, not {list(ref.shape)}"
        err = float(np.abs(got[0] - ref).max() / max(np.abs(ref).max(), 1e-30))
        if err > PROBE_RTOL:
            what = "inclusive prefix sum of k over the tokens" if form.causal else "sum of k over the keys"
            return (f"evaluated from k at length {length} (k of size {scale:g}), z differs from the {what} "
                    f"by {err:.2g} relative" + (" (a constant added to the key sum?)" if scale < 1 else ""))
    return None


def _normaliser(form: LinearForm, graph: gs.Graph | None = None) -> None:
    """Read the division that follows Q·state, if any (or the reciprocal a three-operand Einsum
    multiplies in), into `form`."""
    if form.inline_den is not None:
        _read_den(form, form.inline_den, None, graph)
        return
    consumers = form.product.output.outputs
    if len(consumers) != 1 or consumers[0].op != "Div" or consumers[0].inputs[0] is not form.product.output:
        return
    _read_den(form, consumers[0].inputs[1], consumers[0], graph)


def _read_den(form: LinearForm, den: gs.Tensor, division: gs.Node | None, graph: gs.Graph | None) -> None:
    name = den.name
    plus = plus_constant(den)
    den, eps = (plus[0], scalar_constant(plus[1])) if plus is not None else (den, None)
    node = producer(den)
    if node is not None and node.op == "Unsqueeze":
        den = node.inputs[0]
    clip = producer(den)
    if clip is not None and clip.op in ("Clip", "Max") and read_contraction(producer(clip.inputs[0])) is not None:
        low = scalar_constant(clip.inputs[1]) if len(clip.inputs) > 1 and clip.inputs[1].name else None
        form.normaliser_ok = False
        form.normaliser = (f"the denominator q·z is clamped ({clip.op}, at least "
                           f"{'a computed bound' if low is None else f'{low:g}'}): max(q·z, eps), where "
                           "LinearAttention adds eps (q·z + eps); they differ wherever q·z is below the bound")
        return
    c = read_contraction(producer(den))
    zs = [] if c is None else [z for q_side, z in c.orders() if q_side.tensor is form.q.tensor]
    if not zs:
        if division is None:
            form.normaliser_ok = False
            form.normaliser = f"the reciprocal of {name} multiplied in is no 1/(q·z)"
        else:
            form.normaliser = f"the division by {name} is no q·z: it stays after an unnormalised node"
        return
    problems = [_key_sum_problem(z.tensor, form) for z in zs]
    if None not in problems and graph is not None:
        for i, z in enumerate(zs):
            probed = _probed_key_sum(graph, form, c, z)
            if probed is None:
                problems[i] = None
                form.normaliser_read_by_probe = True
                break
            problems[i] = f"{problems[i]}; {probed}"
    if None not in problems:
        form.normaliser_ok = False
        form.normaliser = f"the division by q·z {'that follows ' if division else ''}is not q·Σk: {problems[0]}"
        return
    eps_problem = _eps_problem(eps)
    form.normaliser_ok = eps_problem is None
    form.normaliser = (f"divided by q·Σk + {eps:g}" if eps else "divided by q·Σk") + (
        " (z computed otherwise, e.g. bucketed, equal to the key sum by evaluation)"
        if form.normaliser_read_by_probe else "") + (
        " (a reciprocal multiplied in by a three-operand Einsum)" if division is None else "") + (
        "" if eps_problem is None else f": {eps_problem}")
    if form.normaliser_ok:
        form.division, form.eps, form.normalised = division, eps, True


def _three_operand(node: gs.Node) -> tuple[Contraction, gs.Tensor, str] | None:
    """An Einsum of q, the state and a reciprocal r over (batch, n) (`'...de,...nd,...n->...ne'`, as
    performer-pytorch and linear-attention-transformer write the normalised product): (the product
    of the other two as a contraction, r's denominator, r's labels)."""
    if node.op != "Einsum" or len(node.inputs) != 3 or (read := einsum_terms(node)) is None:
        return None
    terms, out = read
    for i, t in enumerate(node.inputs):
        den = _one_over(t)
        if den is None or not set(terms[i]) < set(out):
            continue
        (ia, a), (ib, b) = [(j, x) for j, x in enumerate(node.inputs) if j != i]
        if any(len(set(terms[j])) != len(terms[j]) for j in (ia, ib)):
            return None
        p = Contraction(node, Operand(a, terms[ia]), Operand(b, terms[ib]), out)
        return p, den, terms[i]
    return None


def _one_over(t: gs.Tensor) -> gs.Tensor | None:
    """x when t is 1/x: Reciprocal(x), Div(1, x), or either times the constant 1 (TorchScript and
    optimize=False exports write `1. / x` as Reciprocal then Mul by 1); None otherwise."""
    node = producer(t)
    if node is not None and node.op == "Mul" and len(node.inputs) == 2:
        ones = [x for x in node.inputs if scalar_constant(x) == 1.0]
        node = producer(other_input(node, ones[0])) if ones else None
    if node is None:
        return None
    if node.op == "Reciprocal" or (node.op == "Div" and scalar_constant(node.inputs[0]) == 1.0):
        return node.inputs[-1]
    return None


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
    three = [t for t in map(_three_operand, graph.nodes) if t is not None]
    for p, den, r_labels in [(c, None, None) for c in products(graph)] + three:
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
            if den is not None:
                if set(r_labels) != set(form.batch + form.n):
                    continue
                form.inline_den = den
            _normaliser(form, graph)
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


def _state_like(cumsum: gs.Node) -> bool:
    """A CumSum of a product of two computed tensors (K⊗V or a per-bucket K·V)."""
    c = read_contraction(producer(cumsum.inputs[0]))
    return c is not None and all(constant_value(t) is None for t in (c.a.tensor, c.b.tensor))


@dataclasses.dataclass
class UnreadState:
    """A causal state (CumSum of K⊗V or of per-bucket K·V) that no product with q reads as Q·CumSum(K⊗V)."""

    cumsum: gs.Node

    def why(self) -> str:
        inner = read_contraction(producer(self.cumsum.inputs[0]))
        path, t = [], self.cumsum.outputs[0]
        while len(t.outputs) == 1 and len(path) < 6:
            node = t.outputs[0]
            path.append(node.op if node.op != "Einsum" else f"Einsum({len(node.inputs)} operands)")
            if read_contraction(node) is not None or node.op == "Einsum":
                break
            t = node.outputs[0]
        what = f"CumSum of {inner.a.labels},{inner.b.labels}->{inner.out}" if inner is not None else "CumSum"
        summed = inner is not None and bool(inner.contracted)
        shift = " (padded and sliced on the way: a prefix shifted across buckets)" if "Pad" in path else ""
        return (f"the state {self.cumsum.name} ({what}) is not read as q·CumSum(K⊗V): "
                + ("its K·V also sums over an axis (keys summed per bucket, the prefix taken over buckets), "
                   "a bucketed state attnx does not read; " if summed else "")
                + f"it reaches {' → '.join(path) or 'several consumers'}{shift}")


class FuseLinearAttention(Pass):
    name = "fuse-linear-attention"
    summary = "Q(KᵀV) and the causal CumSum form, with feature map and normaliser → LinearAttention"

    def candidates(self, graph: gs.Graph):
        forms = find_linear(graph)
        yield from ((form.product.node.name, (form,)) for form in forms)
        claimed = {id(form.cumsum) for form in forms if form.cumsum is not None}
        for node in graph.nodes:  # a prefix state no product with q was read over: said, not silent
            if node.op == "CumSum" and id(node) not in claimed and _state_like(node):
                yield node.name, (UnreadState(node),)

    def checks(self, match: Match, graph: gs.Graph, form) -> None:
        if isinstance(form, UnreadState):
            match.check("state_read_by_one_product", False, form.why())
            return
        match.bound = form
        if form.causal:
            ok = _inclusive_forward(form.cumsum)
            if not match.check("cumsum_over_tokens", ok, "an inclusive forward CumSum of K⊗V over the tokens"
                               if ok else "the CumSum is exclusive or reversed: not the causal prefix j ≤ i"):
                return
        if not match.check("kv_contracts_keys", *_kv_contracts_keys(form)):
            return
        match.check("normaliser_matches", form.normaliser_ok, form.normaliser)

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        form: LinearForm = match.bound
        emit = Emitter(graph, f"attnx_fuse_linear/{form.product.node.name}")
        fm, q_in, k_in = shared_feature_map(form.q.tensor, form.k.tensor)
        attrs = {"causal": form.causal, "feature_map": fm, "normalize": form.normalised}
        if form.normalised:
            attrs["eps"] = form.eps if form.eps else attnx_node.EPS_WHEN_ABSENT
        what = attnx_node.emit_linear_attention(
            emit, q=Operand(q_in, form.q.labels), k=Operand(k_in, form.k.labels), v=form.v, batch=form.batch,
            n=form.n, m=form.m, d=form.d, e=form.e, out=form.output, out_labels=form.product.out, attrs=attrs)
        return f"{'causal CumSum form' if form.causal else 'Q(KᵀV)'} → LinearAttention({what})"
