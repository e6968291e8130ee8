"""The numeric guard: every rewrite is run against the graph it replaced before it is kept.

A pass records, per rewritten match, the nodes its rewrite created (`Region`): their boundary
is the tensors they read that are made outside them and are not constants (`inputs`) and the
tensors they make that old nodes or the graph outputs read (`outputs`). Rewrites keep the
names of the tensors they replace (`graph.take_over`), so the same names cut the graph before
the pass and the graph after it.

`check_regions(before, after, regions)` runs both models cut at each region's boundary, in
ONNX Runtime on CPU, at batch 2 and at two lengths (`LENGTHS`: 37, a prime, is a multiple of
no chunk or window; 64 is a power of two), with fresh random N(0, 1) float inputs at the
data-carrying cuts. A cut that depends only on lengths (a RoPE table, a mask built from
Range/Shape) is not cut but computed by both models; graph inputs the region reads only for
shapes are zeros of the same batch and length, as `evaluate._zeros` makes them. The shape of
each cut is its real shape at that length (the model before the pass is run up to it), so
a Reshape to a constant head count still fits; where that cannot run, symbolic axes are
axis 0 → 2 and the others → the length.

The graph after the pass is run twice. Once as it will be deployed: ONNX Runtime, attnx nodes
through their local functions and standard Attention / RotaryEmbedding through its kernels, in
float32. Once from the definitions (`_definitions`): onnx's reference evaluator, every attnx
node computed by its op's float64 reference (`OpSpec.reference`, the ops' naive.py) and rounded
to the node's float32 output, every standard node by onnx's own reference implementation. Both
must agree with the replaced sub-graph: the first checks what will run, the second that the
fused op as defined computes what was replaced (a function body that agreed with a wrong rewrite
would pass the first alone).

Tolerance: max |after − before| ≤ RTOL · max(1, max |before|) + ATOL + S with RTOL = 1e-4,
ATOL = 1e-5, and S = max |before(x') − before(x)| for inputs x' = x·(1 + 1e-5·N(0, 1)) (`NUDGE`).
A softmax, a rotation or a normalised linear attention in float32 over ≤ 64 keys differs
between two summation orders by a few 1e-7 relative; 1e-4 is the parity bound the project's
tests hold fused models to. S is the region's own conditioning: random inputs to a linear
attention whose feature map was cut away give row sums near zero, where float32 in any order
cannot agree to 1e-4; a perturbation of 1e-5 (about 100 float32 ulps) moves such outputs by
more than reordering does, and moves well-conditioned ones by ~1e-5 relative. A wrong scale,
mask, window or feature map moves outputs by 1e-2 or more on random inputs. Non-finite values
must sit at the same places in both.
A region that disagrees, or that cannot be run, fails: the pipeline runs the pass again with it
skipped (`Pass.run(skip=…)`), and the report gives the check `numeric_guard` with what was found.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from attnx.ops import DOMAIN, REGISTRY
from attnx.surgeon.attnx_node import read_node
from attnx.surgeon.evaluate import shape_only
from attnx.surgeon.graph import import_graph

LENGTHS = (37, 64)
BATCH = 2
RTOL = 1e-4
ATOL = 1e-5
NUDGE = 1e-5  # relative input perturbation that measures a region's own float32 sensitivity
WHICH = {"deployed": "ONNX Runtime, float32, the ops' function bodies",
         "float64": "the ops' float64 references, onnx's reference evaluator"}


@dataclasses.dataclass
class Region:
    """The nodes one rewrite created and their boundary, by tensor name."""

    anchor: str
    nodes: list[str]
    inputs: list[str]
    outputs: list[str]


@dataclasses.dataclass
class Verdict:
    anchor: str
    ok: bool
    why: str
    max_error: float | None = None
    lengths: tuple[int, ...] = ()
    errors: dict[str, float] = dataclasses.field(default_factory=dict)  # per run of the rewrite (`WHICH`)


def region_of(anchor: str, graph: gs.Graph, new_nodes: list[gs.Node]) -> Region:
    """The boundary of `new_nodes` in `graph`, just after the rewrite that made them."""
    new = {id(n) for n in new_nodes}
    made = {id(t) for n in new_nodes for t in n.outputs}
    inputs, outputs, seen = [], [], set()
    for node in new_nodes:
        for t in node.inputs:
            if t is None or not t.name or isinstance(t, gs.Constant) or id(t) in made or t.name in seen:
                continue
            seen.add(t.name)
            inputs.append(t.name)
    graph_outputs = {id(t) for t in graph.outputs}
    for node in new_nodes:
        for t in node.outputs:
            if id(t) in graph_outputs or any(id(c) not in new for c in t.outputs):
                outputs.append(t.name)
    return Region(anchor, [n.name for n in new_nodes], inputs, outputs)


def _np_dtype(t: gs.Tensor):
    return np.dtype(t.dtype) if t.dtype is not None else np.dtype(np.float32)


def _zeros(inp: onnx.ValueInfoProto, size: int, batch: int) -> np.ndarray:
    # as attnx.surgeon.evaluate._zeros
    dims = [d.dim_value if d.HasField("dim_value") else (batch if i == 0 else size)
            for i, d in enumerate(inp.type.tensor_type.shape.dim)]
    return np.zeros(dims, onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """Every name `node` reads, those its sub-graphs (If/Loop/Scan bodies) read from outside included."""
    names = [i for i in node.input if i]
    for attr in node.attribute:
        for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            inner = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
            names.extend(x for n in g.node for x in _node_reads(n) if x not in inner)
    return names


def _submodel(model: onnx.ModelProto, outs: list[str], cuts: list[str], dtypes: dict) -> onnx.ModelProto:
    """`model` cut down to what computes `outs`, with `cuts` as its first inputs: built from the protos
    that are needed only (a graphsurgeon copy of a whole model per region cost seconds)."""
    graph = model.graph
    made = {o: n for n in graph.node for o in n.output if o}
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name: i for i in graph.input}
    cut_set, need, seen, stack = set(cuts), [], set(), list(outs)
    used_inputs, used_inits = [], []
    while stack:
        name = stack.pop()
        if name in seen or name in cut_set:
            continue
        seen.add(name)
        if name in made:
            node = made[name]
            if id(node) not in seen:
                seen.add(id(node))
                need.append(node)
                stack.extend(_node_reads(node))
        elif name in inits:
            used_inits.append(inits[name])
        elif name in graph_inputs:
            used_inputs.append(graph_inputs[name])
        else:
            raise ValueError(f"tensor {name!r} is made by no node of the model")
    order = {id(n): i for i, n in enumerate(graph.node)}
    need.sort(key=lambda n: order[id(n)])

    def info(name):
        dtype = dtypes.get(name) or np.float32
        return onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)

    sub = onnx.helper.make_graph(need, "guard", [info(c) for c in cuts] + used_inputs, [info(o) for o in outs],
                                 used_inits)
    out = onnx.helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out


def _session(model: onnx.ModelProto, outs: list[str], cuts: list[str], dtypes: dict):
    """(input ValueInfos after the cuts, InferenceSession) computing `outs` with `cuts` as inputs."""
    import onnxruntime as ort

    sub = _submodel(model, outs, cuts, dtypes)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return list(sub.graph.input)[len(cuts):], session


@functools.cache
def _float64_ops() -> tuple[type, ...]:
    """onnx reference-evaluator kernels for the attnx ops: each computes its op's float64 reference and
    rounds the result to the node's float type (the dtype of its first input, as every spec has it), the
    type the rest of the graph reads."""
    import torch
    from onnx.reference.op_run import OpRun

    def run(self, *inputs, **_attrs):
        spec, attrs = read_node(self.onnx_node)
        args = [*inputs, *[None] * (len(spec.inputs) - len(inputs))]  # the evaluator passes None for '' inputs
        ys = spec.reference(*[None if a is None else torch.from_numpy(np.asarray(a, np.float64)) for a in args],
                            **attrs)
        return tuple(y.numpy().astype(np.asarray(inputs[0]).dtype) for y in ys)

    # op_schema None: the evaluator would otherwise take the schema of a standard op of the same name
    # (ONNX's own LinearAttention) and ask for its attributes
    return tuple(type(name, (OpRun,), {"op_domain": DOMAIN, "op_schema": None, "_run": run}) for name in REGISTRY)


def _definitions(model: onnx.ModelProto, outs: list[str], cuts: list[str], dtypes: dict):
    """A ReferenceEvaluator computing `outs` with `cuts` as inputs from the definitions (module docstring)."""
    from onnx.reference import ReferenceEvaluator

    sub = _submodel(model, outs, cuts, dtypes)
    keep = [f for f in sub.functions if f.domain != DOMAIN]  # attnx nodes run their references, not bodies
    del sub.functions[:]
    sub.functions.extend(keep)
    return ReferenceEvaluator(sub, new_ops=list(_float64_ops()))


def _fallback_shape(t: gs.Tensor, length: int) -> list[int]:
    if t.shape is None:
        raise ValueError(f"tensor {t.name!r} has no known shape")
    return [d if isinstance(d, int) and d >= 0 else (BATCH if i == 0 else length) for i, d in enumerate(t.shape)]


class _Models:
    """The models before and after a pass, read once for all its regions."""

    def __init__(self, before: onnx.ModelProto, after: onnx.ModelProto):
        self.before_model, self.after_model = before, after
        self.before = import_graph(before)
        self.after = import_graph(after)
        self.before_tensors = self.before.tensors()
        self.after_tensors = self.after.tensors()
        self.dtypes = {**{n: t.dtype for n, t in self.before_tensors.items()},
                       **{n: t.dtype for n, t in self.after_tensors.items()}}
        self._shapes: dict[int, dict[str, tuple]] = {}

    def session(self, which: str, outs: list[str], cuts: list[str]):
        return _session(self.before_model if which == "before" else self.after_model, outs, cuts, self.dtypes)

    def cuts_of(self, region: Region) -> list[str]:
        """The region's float inputs that carry data (not only lengths) and exist before the pass too; integer
        and boolean ones (indices, masks) are computed by both models from the zero graph inputs."""
        return [name for name in region.inputs
                if name in self.after_tensors and name in self.before_tensors
                and _np_dtype(self.after_tensors[name]).kind == "f"
                and not shape_only(self.after_tensors[name], self.after)]

    def measure(self, names: list[str]) -> None:
        """Real shapes of `names` at each length: the model before the pass, run once on zero inputs."""
        graph_inputs = {t.name for t in self.before.inputs}
        missing = [n for n in dict.fromkeys(names) if n not in graph_inputs]
        if not missing:
            return
        try:
            infos, session = self.session("before", missing, [])
            for length in LENGTHS:
                values = session.run(None, {i.name: _zeros(i, length, BATCH) for i in infos})
                self._shapes.setdefault(length, {}).update({n: tuple(np.shape(v)) for n, v in zip(missing, values)})
        except Exception:  # onnxruntime's own errors: the static rule below, per tensor
            pass

    def shapes(self, names: list[str], length: int) -> dict[str, tuple]:
        have = self._shapes.get(length, {})
        graph_inputs = {t.name: t for t in self.before.inputs}
        out = {}
        for n in names:
            if n in have:
                out[n] = have[n]
            else:
                out[n] = tuple(_fallback_shape(graph_inputs.get(n) or self.before_tensors[n], length))
        return out


def _compare(before: np.ndarray, after: np.ndarray, nudged: np.ndarray) -> tuple[bool, float, str]:
    """Do `after` and `before` agree? `nudged` is `before` on inputs moved by NUDGE relative: how far the
    computation itself moves under float32-sized input changes (its conditioning), allowed on top."""
    if before.shape != after.shape:
        return False, float("inf"), f"shape {after.shape} after, {before.shape} before"
    if before.dtype.kind not in "fc":
        same = bool(np.array_equal(before, after))
        return same, 0.0 if same else float("inf"), "" if same else "integer values differ"
    b, a, c = before.astype(np.float64), after.astype(np.float64), nudged.astype(np.float64)
    fb, fa = np.isfinite(b), np.isfinite(a)
    if not np.array_equal(fb, fa) or not np.array_equal(b[~fb], a[~fa]):
        return False, float("inf"), "non-finite values at different places"
    if not fb.any():
        return True, 0.0, ""
    err = float(np.max(np.abs(a[fb] - b[fb])))
    scale = max(1.0, float(np.max(np.abs(b[fb]))))
    fc = fb & np.isfinite(c)
    sensitivity = float(np.max(np.abs(c[fc] - b[fc]))) if fc.any() else 0.0
    tol = RTOL * scale + ATOL + sensitivity
    return err <= tol, err, (f"max |after − before| = {err:.3g} > {tol:.3g} (max |before| = {scale:.3g}, "
                             f"input sensitivity {sensitivity:.3g})")


def check_region(models: _Models, region: Region) -> Verdict:
    outs = [n for n in region.outputs if n in models.after_tensors]  # cleanup() may drop dead ones
    if not outs or any(n not in models.before_tensors for n in outs):
        return Verdict(region.anchor, False, "cannot evaluate: the rewritten region's outputs are not "
                                             "tensors of the graph before the pass")
    cuts = models.cuts_of(region)
    try:
        before_infos, before_session = models.session("before", outs, cuts)
        after_infos, after_session = models.session("after", outs, cuts)
        definitions = _definitions(models.after_model, outs, cuts, models.dtypes)
    except Exception as exc:  # onnx/onnxruntime errors: a region that cannot be built is not kept
        return Verdict(region.anchor, False, f"cannot evaluate the region: {str(exc).splitlines()[0][:200]}")
    worst, rng = {"deployed": 0.0, "float64": 0.0}, np.random.default_rng(zlib.crc32(region.anchor.encode()) + 1)
    for length in LENGTHS:
        try:
            shapes = models.shapes(cuts, length)
            feeds = {n: rng.standard_normal(shapes[n]).astype(_np_dtype(models.after_tensors[n])) for n in cuts}
            rest = {i.name: _zeros(i, length, BATCH) for i in before_infos}
            want = before_session.run(None, {**feeds, **rest})
            nudge = {n: (v * (1 + NUDGE * rng.standard_normal(v.shape))).astype(v.dtype) for n, v in feeds.items()}
            nudged = before_session.run(None, {**nudge, **rest})
            after_feeds = {**feeds, **{i.name: _zeros(i, length, BATCH) for i in after_infos}}
            runs = {"deployed": after_session.run(None, after_feeds)}
        except Exception as exc:  # onnxruntime's own errors
            return Verdict(region.anchor, False,
                           f"cannot evaluate the region at length {length}: {str(exc).splitlines()[0][:200]}")
        try:
            runs["float64"] = definitions.run(None, after_feeds)
        except Exception as exc:  # the reference evaluator's or an op reference's own errors
            return Verdict(region.anchor, False, f"cannot evaluate the rewrite with the ops' float64 references at "
                                                 f"length {length}: {str(exc).splitlines()[0][:200]}")
        for which, got in runs.items():
            how = WHICH[which]
            for name, b, a, c in zip(outs, want, got, nudged):
                ok, err, what = _compare(np.asarray(b), np.asarray(a), np.asarray(c))
                if not ok:
                    return Verdict(region.anchor, False, f"the rewrite changes {name!r} at batch {BATCH}, length "
                                                         f"{length} (after: {how}): {what}; tolerance {RTOL:g}·max(1, "
                                                         f"max|before|) + {ATOL:g}", err, LENGTHS)
                worst[which] = max(worst[which], err)
    return Verdict(region.anchor, True, f"max |after − before| = {worst['deployed']:.3g} ({WHICH['deployed']}), "
                                        f"{worst['float64']:.3g} ({WHICH['float64']}) at batch {BATCH}, lengths "
                                        f"{', '.join(map(str, LENGTHS))}", max(worst.values()), LENGTHS, worst)


def check_regions(before: onnx.ModelProto, after: onnx.ModelProto, regions: list[Region]) -> list[Verdict]:
    """One `Verdict` per region: does the model after the pass compute what the model before did?"""
    if not regions:
        return []
    try:
        models = _Models(before, after)
    except Exception as exc:  # graphsurgeon import errors
        return [Verdict(r.anchor, False, f"cannot evaluate: {exc}") for r in regions]
    models.measure([c for r in regions for c in models.cuts_of(r)])
    return [check_region(models, r) for r in regions]
