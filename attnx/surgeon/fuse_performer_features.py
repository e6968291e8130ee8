"""Fusion: FAVOR+ positive random features → attnx `PerformerFeatures`.

Pattern: an Exp whose argument is built (Add, Sub, Neg) from a contraction of x' with a
constant matrix W [M, D] (or [D, M]), followed by scalar-constant steps (+ eps, · m^-½).
x is x' before scalar scalings (the op applies D^-¼ itself). Implementations spell ‖x‖²/2,
the stabiliser and the eps placement in many ways, so the pass checks the values, not the
spelling:
  constant_projection    W is a constant two-axis matrix contracted with x over D
  features_of_x_only     the features depend on graph inputs only through x (and shapes)
  fits_performer_features  x is [B, H, N, D] or [B, N, D]
  features_match_favor_plus  evaluated on a probe x, the subgraph equals the spec's reference
                         with W for kind query (row stabiliser), key (one stabiliser per
                         batch and head) or key_fixed (a constant c, → offset), and a constant eps (eps·m^-½ when the graph adds eps
                         before dividing by √m)
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
from attnx.surgeon.contraction import read_contraction
from attnx.surgeon.evaluate import depends_only_on, evaluate_from, probe_for
from attnx.surgeon.framework import Match, Pass
from attnx.surgeon.graph import Emitter, constant_value, producer, scalar_constant, take_over
from attnx.surgeon.readers import constant_factor, other_input
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
                value = constant_value(w.tensor)
                if value is not None and value.ndim == 2 and len(c.contracted) == 1:
                    (d,) = c.contracted
                    m = next(ch for ch in w.labels if ch != d)
                    return c, value.transpose([w.labels.index(m), w.labels.index(d)]), x
            continue
        if node.op in ("Add", "Sub", "Neg"):
            stack.extend(node.inputs)
    return None


def _raw_x(tensor: gs.Tensor) -> gs.Tensor:
    """x before scalar-constant scalings (x' = x · D^-¼ in the papers' code)."""
    while (node := producer(tensor)) is not None:
        data = [t for t in node.inputs if scalar_constant(t) is None]
        if len(data) != 1 or constant_factor(node, data[0]) is None:
            break
        tensor = data[0]
    return tensor


def _features_out(exp: gs.Node) -> gs.Tensor:
    """The Exp's output followed through single-consumer steps with a scalar constant (+ eps, · m^-½)."""
    tensor = exp.outputs[0]
    while len(tensor.outputs) == 1:
        node = tensor.outputs[0]
        plus = node.op == "Add" and len(node.inputs) == 2 and scalar_constant(other_input(node, tensor)) is not None
        if not plus and constant_factor(node, tensor) is None:
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
        x, out = _raw_x(x_scaled.tensor), _features_out(exp)
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
        if not match.check("features_match_favor_plus", attrs is not None,
                           f"FAVOR+ features, kind {attrs['kind']}" if attrs else
                           "evaluated on a probe, the subgraph is not FAVOR+ with this W for queries or keys"):
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
