"""Reading a subgraph by running it: what passes use where spellings vary too much to match.

Exporters spell a band mask, a RoPE table, FAVOR+ features or FLASH's across-chunk sum in
many ways. A pass first proves by a graph walk what the subgraph depends on — lengths only
(`shape_only`: every path from a graph input passes through a Shape node) or some tensors
only (`depends_only_on`) — then runs it in ONNX Runtime: at several lengths
(`values_at_lengths`), on a probe x (`evaluate_from`) or on probes for several tensors at a
given length (`evaluate_cut`), and compares the values with the op spec's own reference or mask.

Whatever an exporter validly writes runs here: the cut-out graph keeps no intermediate value infos
(graphsurgeon types a sequence, e.g. SplitToSequence's output, as a tensor, which ONNX Runtime
refuses), so ONNX Runtime infers every intermediate type itself; an output whose type is unknown is
typed by ONNX shape inference. A subgraph that still cannot run is read as no match, and
`values_at_lengths_why` says what ONNX Runtime reported, for the check's reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from attnx.exporters.functions import attach_local_functions
from attnx.ops import DOMAIN
from attnx.surgeon.graph import producer

# every symbolic axis takes this size when a subgraph is run on a probe (symbols stay consistent)
PROBE_SIZE = 3


def depends_only_on(tensor: gs.Tensor, x, graph: gs.Graph) -> bool:
    """True when every path from a graph input to `tensor` passes through `x` (a tensor, a list
    of tensors, or None) or a Shape node (CastLike's target, whose type alone it reads, counts as a Shape)."""
    seen, stack, inputs = set(), [tensor], {id(t) for t in graph.inputs}
    cuts = {id(t) for t in (x if isinstance(x, (list, tuple)) else [x]) if t is not None}
    while stack:
        t = stack.pop()
        if id(t) in seen or id(t) in cuts:
            continue
        seen.add(id(t))
        if id(t) in inputs:
            return False
        node = producer(t)
        if node is not None and node.op != "Shape":
            stack.extend(node.inputs[:1] if node.op == "CastLike" else node.inputs)
    return True


def shape_only(tensor: gs.Tensor, graph: gs.Graph) -> bool:
    """True when `tensor` depends on the graph inputs' lengths, never on their values."""
    return depends_only_on(tensor, None, graph)


def _session(graph: gs.Graph, outs, cuts):
    """(ModelProto, InferenceSession) computing `outs`, with `cuts` cut loose as the first inputs."""
    import onnxruntime as ort

    sub = graph.copy()
    tensors = sub.tensors()
    targets = []
    for out in outs:
        targets.append(tensors[out.name])
        targets[-1].dtype = out.dtype or np.float32
    cut = []
    for x in cuts:
        cut.append(tensors[x.name])
        cut[-1].inputs.clear()
        cut[-1].dtype = x.dtype or np.float32
    sub.inputs = cut + [t for t in sub.inputs if all(t is not c for c in cut)]
    sub.outputs = targets
    sub.cleanup()
    model = gs.export_onnx(sub, do_type_check=False)
    del model.graph.value_info[:]
    if any(n.domain == DOMAIN for n in model.graph.node):  # a node an earlier pass fused: run by its body
        attach_local_functions(model)
    if any(out.dtype is None for out in outs):
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v.type for v in [*inferred.graph.value_info, *inferred.graph.output]
                 if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
        for o, out in zip(model.graph.output, outs):
            if out.dtype is None and o.name in known:
                o.type.tensor_type.elem_type = known[o.name].tensor_type.elem_type
    return model, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _failure(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _zeros(inp: onnx.ValueInfoProto, size: int, batch: int) -> np.ndarray:
    dims = [d.dim_value if d.HasField("dim_value") else (batch if i == 0 else size)
            for i, d in enumerate(inp.type.tensor_type.shape.dim)]
    return np.zeros(dims, onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))


def values_at_lengths_why(graph: gs.Graph, tensor: gs.Tensor, lengths) -> tuple[list[np.ndarray] | None, str]:
    """(`tensor` at each length, every dynamic non-batch input axis at it, batch 1; "") or (None, what
    failed) when the subgraph cannot run."""
    try:
        model, session = _session(graph, [tensor], [])
        return [np.asarray(session.run(None, {i.name: _zeros(i, n, 1) for i in model.graph.input})[0])
                for n in lengths], ""
    except Exception as exc:  # onnxruntime's and onnx's own error types: read as no match, with the reason
        return None, _failure(exc)


def values_at_lengths(graph: gs.Graph, tensor: gs.Tensor, lengths) -> list[np.ndarray] | None:
    """`tensor` at each length (every dynamic non-batch input axis at it, batch 1); None when it cannot run."""
    return values_at_lengths_why(graph, tensor, lengths)[0]


def evaluate_from(graph: gs.Graph, x: gs.Tensor, out: gs.Tensor, probe: np.ndarray) -> np.ndarray | None:
    """`out` with `x` set to `probe` (other inputs, read only for shapes, zeros at PROBE_SIZE); None on failure."""
    try:
        model, session = _session(graph, [out], [x])
        feeds = {x.name: probe.astype(np.float32)}
        feeds.update({i.name: _zeros(i, PROBE_SIZE, PROBE_SIZE) for i in model.graph.input[1:]})
        return np.asarray(session.run(None, feeds)[0])
    except Exception:  # onnxruntime's own error types: a subgraph it cannot run is read as no match
        return None


def evaluate_cut(graph: gs.Graph, cuts: list[gs.Tensor], outs: list[gs.Tensor], probes: list[np.ndarray],
                 length: int, batch: int) -> list[np.ndarray] | None:
    """`outs` with each of `cuts` set to its probe and the other graph inputs (read only for shapes)
    zeros at `length` with `batch`; None on failure."""
    try:
        model, session = _session(graph, outs, cuts)
        feeds = {x.name: p.astype(np.float32) for x, p in zip(cuts, probes)}
        feeds.update({i.name: _zeros(i, length, batch) for i in model.graph.input[len(cuts):]})
        return [np.asarray(v) for v in session.run(None, feeds)]
    except Exception:  # onnxruntime's own error types: a subgraph it cannot run is read as no match
        return None


def probe_for(x: gs.Tensor, seed: int = 0, graph: gs.Graph | None = None) -> np.ndarray:
    """A random float32 input shaped like `x`, symbolic axes at PROBE_SIZE. With `graph`, shaped as `x`
    really is when the graph inputs are what evaluate_from feeds (static axes at their sizes, symbolic
    ones at PROBE_SIZE): a Reshape that reads its target from an input then agrees with the probe even
    where x's own shape is unknown or a symbol that is not an input's axis (e.g. batch·patches)."""
    dims = None
    if graph is not None:
        try:
            model, session = _session(graph, [x], [])
            feeds = {i.name: _zeros(i, PROBE_SIZE, PROBE_SIZE) for i in model.graph.input}
            dims = list(np.shape(session.run(None, feeds)[0]))
        except Exception:  # not computable from the inputs alone: fall back on shape analysis
            dims = None
    if dims is None:
        dims = [d if isinstance(d, int) else PROBE_SIZE for d in x.shape]
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
