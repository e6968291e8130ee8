"""Fusion: FAVOR+ positive random features → attnx `PerformerFeatures`.

Pattern: an Exp whose argument is built (Add, Sub, Neg) from a contraction of x' with a
constant matrix W [M, D] (or [D, M]), also broadcast over batch and head axes on the way (an Expand:
einops `repeat(W, 'j d -> b h j d')` in performer-pytorch; a Tile; or folded into a constant
with equal slices), followed by scalar-constant steps (+ eps, · m^-½).
x is x' before scalar scalings (the op applies D^-¼ itself). Implementations spell ‖x‖²/2,
the stabiliser and the eps placement in many ways, so the pass checks the values, not the
spelling:
  constant_projection    W is a constant two-axis matrix contracted with x over D
  features_of_x_only     the features depend on graph inputs only through x (and shapes)
  fits_performer_features  x is [B, H, N, D] or [B, N, D]
  features_match_favor_plus  evaluated on a probe x, the subgraph equals the spec's reference
                         with W for kind query (row stabiliser), key (one stabiliser per
                         batch and head) or key_fixed (a constant c, → offset), and a constant eps (eps·m^-½ when the graph adds eps
                         before dividing by √m), then confirmed on a second probe (a stabiliser
                         that is one max over the whole tensor looks like key_fixed on one probe;
                         its offset moves with the data). What differs is said: e.g. a stabiliser
                         shared by every batch and head (torch.amax without dims) is left alone,
                         since it cancels only in the normalised attention, not in the features
Rewrite: PerformerFeatures(x, W; kind, eps) replaces the features; the attention that
consumes them is left to reassociate and fuse-linear-attention (→ LinearAttention(identity)).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import torch

from attnx.ops import get_spec
from attnx.ops.performer_features import reference as favor_reference
from attnx.surgeon.attnx_node import describe, emit_node
from attnx.surgeon.contraction import Operand, read_contraction
from attnx.surgeon.evaluate import depends_only_on, evaluate_from, probe_for
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, constant_value, producer, scalar_constant, take_over
from attnx.surgeon.readers import lengths_scalar, other_input, scale_factor
from attnx.surgeon.shapes import fmt

SPEC = get_spec("PerformerFeatures")
# float32 evaluation of exp(·) against the float64 reference
RTOL, ATOL = 1e-4, 1e-7


def _projection(exp: gs.Node):
    """(contraction, W as [M, D], x' operand) for the contraction with a constant in the Exp's argument."""
    stack, seen = [exp.inputs[0]], set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        node = producer(t)
        if node is None:
            continue
        c = read_contraction(node)
        if c is not None:
            for w, x in ((c.a, c.b), (c.b, c.a)):
                found = _constant_matrix(w)
                if found is not None and len(c.contracted) == 1:
                    value, labels = found
                    (d,) = c.contracted
                    if d not in labels or any(ch not in x.labels or ch not in c.out for ch in w.labels
                                              if ch not in labels):
                        continue  # W's broadcast axes must be batch axes of x and of the output
                    m = next(ch for ch in labels if ch != d)
                    return c, value.transpose([labels.index(m), labels.index(d)]), x
            continue
        if node.op in ("Add", "Sub", "Neg"):
            stack.extend(node.inputs)
    return None


def _constant_matrix(w: Operand) -> tuple[np.ndarray, str] | None:
    """(W, the labels of its two axes) when `w` is a constant two-axis matrix, also one broadcast over
    leading axes on its way to the product: an Expand (einops `repeat(W, 'j d -> b h j d')`), a
    Tile or Unsqueeze over leading axes only, or a constant folded with equal leading slices; a Cast
    or CastLike to a float type on the way (`.type_as(data)`) rounds W to that type."""
    tensor, labels = w.tensor, w.labels
    while (node := producer(tensor)) is not None and node.op in ("Expand", "Tile", "Unsqueeze", "Identity",
                                                                 "Cast", "CastLike"):
        r = len(tensor.shape or [])
        if node.op == "Unsqueeze":
            axes = constant_value(node.inputs[1]) if len(node.inputs) > 1 else node.attrs.get("axes")
            if axes is None or r < 2 or any(int(a) % r >= r - 2 for a in np.ravel(axes)):
                break
        if node.op == "Tile":
            reps = constant_value(node.inputs[1])
            if reps is None or reps.size < 2 or any(int(v) != 1 for v in np.ravel(reps)[-2:]):
                break
        tensor = node.inputs[0]
    value = constant_value(tensor)
    if value is None or value.ndim < 2 or len(labels) < 2:
        return None
    if tensor is not w.tensor:  # the casts on the way: W as the contraction reads it
        dtype = np.dtype(w.tensor.dtype) if w.tensor.dtype is not None else value.dtype
        if dtype.kind != "f":
            return None
        value = value.astype(dtype)
    want = list(w.tensor.shape or [])[-2:]
    if len(want) == 2 and any(isinstance(a, int) and a != b for a, b in zip(want, value.shape[-2:])):
        return None  # the broadcast also widens the matrix's own axes
    slices = value.reshape(-1, *value.shape[-2:])
    if not all(np.array_equal(s, slices[0]) for s in slices[1:]):
        return None  # a different matrix per batch or head is no shared projection
    return slices[0], labels[-2:]


def _raw_x(graph: gs.Graph, tensor: gs.Tensor) -> gs.Tensor:
    """x before scalings by a constant or by a scalar computed from shapes (x' = x · D^-¼ in the papers'
    code; TorchScript and optimize=False exports compute D^-¼ from Shape(x))."""
    while (node := producer(tensor)) is not None:
        data = [t for t in node.inputs if lengths_scalar(graph, t) is None]
        if len(data) != 1 or scale_factor(graph, node, data[0]) is None:
            break
        tensor = data[0]
    return tensor


def _features_out(graph: gs.Graph, exp: gs.Node) -> gs.Tensor:
    """The Exp's output followed through single-consumer steps with a scalar constant or shape-computed
    scalar (+ eps, · m^-½)."""
    tensor = exp.outputs[0]
    while len(tensor.outputs) == 1:
        node = tensor.outputs[0]
        plus = node.op == "Add" and len(node.inputs) == 2 and scalar_constant(other_input(node, tensor)) is not None
        if not plus and scale_factor(graph, node, tensor) is None:
            break
        tensor = node.outputs[0]
    return tensor


def _identify(got: np.ndarray, probe: np.ndarray, w: np.ndarray, four_d: bool) -> dict | None:
    """kind, eps (and offset) of the spec's FAVOR+ that reproduces `got`; None when none does.

    query and key: got = ref + eps. key_fixed (a data-independent stabiliser c): got =
    exp(−c)·ref₀ + eps, fitted by least squares, offset = c.
    """
    x = torch.from_numpy(probe if four_d else probe[:, None]).double()
    for kind in ("query", "key", "key_fixed"):
        ref = favor_reference(x, torch.from_numpy(w).double(), kind=kind, eps=0.0, offset=0.0)[0].numpy()
        ref = ref if four_d else ref[:, 0]
        if ref.shape != got.shape:
            return None
        scale, offset = 1.0, 0.0
        if kind == "key_fixed":
            (scale, eps), *_ = np.linalg.lstsq(np.stack([ref.ravel(), np.ones(ref.size)], 1), got.ravel().astype(np.float64),
                                               rcond=None)
            if scale <= 0:
                continue
            offset = float(f"{-np.log(scale):.6g}")
            scale = float(np.exp(-offset))
        eps = float(np.median(got - scale * ref))
        if 0 <= eps < 1 and np.allclose(got, scale * ref + eps, rtol=RTOL, atol=ATOL + RTOL * abs(eps)):
            # float32 features fix eps to about four digits; the graph's constant is that rounded
            attrs = {"kind": kind, "eps": float(f"{eps:.4g}") if eps > 1e-12 else 0.0}
            if kind == "key_fixed":
                attrs["offset"] = offset
            return attrs
    return None


def _reproduces(got: np.ndarray, probe: np.ndarray, w: np.ndarray, four_d: bool, attrs: dict) -> bool:
    """Do the spec's features with `attrs` reproduce `got` on `probe`?"""
    x = torch.from_numpy(probe if four_d else probe[:, None]).double()
    ref = favor_reference(x, torch.from_numpy(w).double(), kind=attrs["kind"], eps=attrs["eps"],
                          offset=attrs.get("offset", 0.0))[0].numpy()
    ref = ref if four_d else ref[:, 0]
    return ref.shape == got.shape and bool(np.allclose(got, ref, rtol=RTOL, atol=ATOL + RTOL * attrs["eps"]))


def _mismatch(got: np.ndarray, probe: np.ndarray, w: np.ndarray, four_d: bool) -> str:
    """In words, how the evaluated features differ from every kind of the spec's FAVOR+."""
    base = "evaluated on a probe, the subgraph is not FAVOR+ with this W for queries or keys"
    x = torch.from_numpy(probe if four_d else probe[:, None]).double()
    wt = torch.from_numpy(w).double()
    xs = x * x.shape[-1] ** -0.25
    wx = xs @ wt.T
    unstabilised = ((wx - (xs * xs).sum(-1, keepdim=True) / 2).exp() / w.shape[0] ** 0.5).numpy()
    unstabilised = unstabilised if four_d else unstabilised[:, 0]
    if unstabilised.shape != got.shape:
        return f"{base}: it has shape {list(got.shape)}, FAVOR+ with W [{w.shape[0]}, {w.shape[1]}] " \
               f"{list(unstabilised.shape)}"
    # got ≈ unstabilised · exp(−c) + eps: read c where the features stand well above any eps
    floor = float(np.min(got)) if got.size else 0.0  # about eps: the smallest features are eps and little more
    lifted = got - floor
    big = lifted > 0.05 * float(np.max(lifted)) if got.size and np.max(lifted) > 0 else np.zeros(got.shape, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(big, np.log(unstabilised) - np.log(np.where(big, lifted, 1.0)), np.nan)
    groups = c.reshape(c.shape[0] * (c.shape[1] if four_d else 1), -1)
    if not np.isfinite(groups).any(axis=1).all():
        return base
    spread_in_group = float(np.nanmax(np.nanmax(groups, 1) - np.nanmin(groups, 1)))
    spread_all = float(np.nanmax(groups) - np.nanmin(groups))
    if spread_all < 5e-2 and groups.shape[0] > 1:
        return (f"{base}: its stabiliser is one constant over the whole tensor (every batch and head, "
                "as torch.amax(data_dash) without dims); PerformerFeatures' key kind takes one per batch "
                "and head, query one per row: the features differ (they agree only after the attention's "
                "normalisation), so they are left alone")
    if spread_in_group < 5e-2:
        return f"{base}: its stabiliser is constant per batch and head but is not max(W x') (key kind)"
    return base


class FusePerformerFeatures(Pass):
    name = "fuse-performer-features"
    summary = "FAVOR+ exp(Wx − ‖x‖²/2 − c)/√m + eps → PerformerFeatures"

    def candidates(self, graph: gs.Graph):
        for node in graph.nodes:
            # an exp with no random projection in its argument: softmax written out
            if node.op == "Exp" and (found := _projection(node)) is not None:
                yield node.name, (node, *found)

    def checks(self, match: Match, graph: gs.Graph, exp: gs.Node, contraction, w, x_scaled) -> None:
        x_features = (x_scaled.tensor.shape or [None])[-1]
        if not match.check("constant_projection", w.shape[1] == x_features,
                           f"W [{w.shape[0]}, {w.shape[1]}] contracted with x over its last axis"
                           if w.shape[1] == x_features else
                           f"W [{w.shape[0]}, {w.shape[1]}] is contracted over its axis of {w.shape[1]}; "
                           f"x's last axis is {fmt(x_features)}"):
            return
        x, out = _raw_x(graph, x_scaled.tensor), _features_out(graph, exp)
        of_x = depends_only_on(out, x, graph)
        if not match.check("features_of_x_only", of_x,
                           "the features read graph inputs only through x" if of_x else
                           "the features read graph inputs other than through x"):
            return
        r = len(x.shape or [])
        fits_op = r in (3, 4) and isinstance(x.shape[-1], int)
        if not match.check("fits_performer_features", fits_op,
                           f"x of rank {r} with D = {x.shape[-1]}" if fits_op else
                           f"x of rank {r} with D = {fmt((x.shape or [None])[-1])}; PerformerFeatures takes "
                           "[B, H, N, D] or [B, N, D] with a static D"):
            return
        probe = probe_for(x)
        got = evaluate_from(graph, x, out, probe)
        attrs = None if got is None else _identify(got, probe, w, r == 4)
        if attrs is not None:  # a second probe: a data-dependent constant is no key_fixed offset
            probe2 = 1.5 * probe_for(x, seed=1)
            got2 = evaluate_from(graph, x, out, probe2)
            if got2 is None or not _reproduces(got2, probe2, w, r == 4, attrs):
                attrs, got, probe = None, got2 if got2 is not None else got, probe2 if got2 is not None else probe
        if not match.check("features_match_favor_plus", attrs is not None,
                           f"FAVOR+ features, kind {attrs['kind']}" if attrs else
                           "the subgraph could not be evaluated on a probe x" if got is None else
                           _mismatch(got, probe, w, r == 4)):
            return
        match.bound = (exp, x, out, w, attrs)

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        exp, x, out, w, attrs = match.bound
        emit = Emitter(graph, f"attnx_fuse_performer/{exp.name}")
        four_d = len(x.shape) == 4
        xb = x if four_d else emit.op("Unsqueeze", x, emit.ints([1]))
        y, resolved = emit_node(emit, SPEC, [xb, w.astype(np.float32)], attrs, out.dtype)
        if not four_d:
            y = emit.op("Squeeze", y, emit.ints([1]))
        take_over(out, y, emit)
        return f"FAVOR+ features → {SPEC.name}({describe(SPEC, resolved)}), W [{w.shape[0]}, {w.shape[1]}]"
