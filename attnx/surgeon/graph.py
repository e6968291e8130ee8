"""Small reads and writes on an onnx-graphsurgeon graph that every pass shares.

Reads: a tensor's producer, its constant value, whether it is a scalar by its shape.
Writes: `Emitter` adds named nodes (`e.op("MatMul", a, b)` returns the output tensor) and
`take_over` makes a new subgraph produce an existing tensor, so the tensor keeps its name,
its consumers and its place among the graph outputs.
Input: `read_model` and `validate_input_model` refuse, saying what is wrong, a file the passes
cannot take (empty, not a ModelProto, an opset older than 17, duplicate names, a cycle, undecodable
text); opset 17 is converted in place (attnx.surgeon.upgrade). `import_graph` reads what
exporters validly write and graphsurgeon cannot carry: an empty list attribute (`Constant(value_ints=[])`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from attnx.errors import OnnxFileError
from attnx.exporters import OPSETS
from attnx.surgeon.upgrade import OLDEST_READ, upgrade_opset

MIN_OPSET = min(OPSETS)  # the passes build nodes of this opset and later

_LIST_ATTRIBUTES = (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS, onnx.AttributeProto.STRINGS,
                    onnx.AttributeProto.TENSORS, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.SPARSE_TENSORS,
                    onnx.AttributeProto.TYPE_PROTOS)
_CONSTANT_LISTS = {"value_ints": onnx.TensorProto.INT64, "value_floats": onnx.TensorProto.FLOAT,
                   "value_strings": onnx.TensorProto.STRING}


def _has_empty_lists(graph: onnx.GraphProto) -> bool:
    for node in graph.node:
        for a in node.attribute:
            if a.type in _LIST_ATTRIBUTES and not len(onnx.helper.get_attribute_value(a)):
                return True
            if a.type == onnx.AttributeProto.GRAPH and _has_empty_lists(a.g):
                return True
            if a.type == onnx.AttributeProto.GRAPHS and any(_has_empty_lists(g) for g in a.graphs):
                return True
    return False


def _without_empty_lists(graph: onnx.GraphProto) -> int:
    """Rewrite, in place, the empty list attributes graphsurgeon cannot export (onnx.helper cannot type an
    empty list): `Constant(value_ints=[])` becomes `Constant(value=<empty int64 [0]>)`, the same value; an
    empty optional list attribute elsewhere is dropped (ONNX reads an empty list and an absent one alike:
    no axes, no pads). Returns how many were rewritten; sub-graphs are included."""
    changed = 0
    for node in graph.node:
        keep, rewritten = [], False
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                changed += _without_empty_lists(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                changed += sum(_without_empty_lists(g) for g in a.graphs)
            if a.type not in _LIST_ATTRIBUTES or len(onnx.helper.get_attribute_value(a)):
                keep.append(a)
                continue
            rewritten = True
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and a.name in _CONSTANT_LISTS:
                keep.append(onnx.helper.make_attribute(
                    "value", onnx.helper.make_tensor(node.output[0], _CONSTANT_LISTS[a.name], [0], [])))
        if rewritten:
            changed += 1
            keep = [onnx.AttributeProto.FromString(a.SerializeToString()) for a in keep]
            del node.attribute[:]
            node.attribute.extend(keep)
    return changed


def _has_bfloat16(graph: onnx.GraphProto) -> bool:
    values = [*graph.input, *graph.value_info, *graph.output]
    return (any(v.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16 for v in values)
            or any(t.data_type == onnx.TensorProto.BFLOAT16 for t in graph.initializer))


def _untype_non_tensors(proto: onnx.GraphProto, graph: gs.Graph) -> None:
    """graphsurgeon reads a sequence (SplitToSequence's output), optional or map value as a tensor of its
    element type and writes it back so, which ONNX Runtime refuses ("expected seq(tensor(float))"): such
    values keep no type here, and whoever runs the graph infers it."""
    names = {v.name for v in [*proto.value_info, *proto.output, *proto.input]
             if v.type.WhichOneof("value") not in (None, "tensor_type")}
    if not names:
        return
    for name, tensor in graph.tensors().items():
        if name in names and isinstance(tensor, gs.Variable):
            tensor.dtype, tensor.shape = None, None


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """gs.import_onnx, with bfloat16 constants loaded as ml_dtypes bfloat16 arrays (what onnx.numpy_helper
    reads them as). graphsurgeon's own lazy load of a bfloat16 constant warns, once per constant, that the
    values will be cast to another type; they are not (a Constant exports in its export_dtype), so reading
    a bf16 file's scales printed some hundred false warnings. Its import also warns, once, that bfloat16
    has no NumPy type and "the original ONNX type will be preserved": it is (ml_dtypes carries it), so that
    warning is held back for the import alone, other warnings and errors still print."""
    from onnx_graphsurgeon.logger import G_LOGGER

    if _has_empty_lists(model.graph):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        _without_empty_lists(copy.graph)
        model = copy
    severity = G_LOGGER.severity
    if _has_bfloat16(model.graph):
        G_LOGGER.severity = max(severity, G_LOGGER.ERROR)
    try:
        graph = gs.import_onnx(model)
    finally:
        G_LOGGER.severity = severity
    _untype_non_tensors(model.graph, graph)
    constants = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    constants += [v for node in graph.nodes for v in node.attrs.values() if isinstance(v, gs.Constant)]
    for c in constants:
        lazy = c._values  # graphsurgeon's LazyValues until first read; the read is what warns
        if isinstance(lazy, gs.ir.tensor.LazyValues) and lazy.dtype == onnx.TensorProto.BFLOAT16:
            c.values = onnx.numpy_helper.to_array(lazy.tensor)
    return graph


def read_model(path: str | Path) -> onnx.ModelProto:
    """The ModelProto at `path`; a missing, empty or malformed file is an OnnxFileError saying which."""
    path = Path(path)
    if not path.exists():
        raise OnnxFileError(f"expected an ONNX file at {path}, found nothing: {path} does not exist")
    if path.is_dir():
        raise OnnxFileError(f"expected an ONNX file at {path}, found a folder: {path} is a directory")
    if not path.is_file():
        raise OnnxFileError(f"expected an ONNX file at {path}, found a special file (a pipe or a device)")
    if path.stat().st_size == 0:
        raise OnnxFileError(f"{path} is empty (0 bytes): expected a serialized ONNX ModelProto")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors
        raise OnnxFileError(f"{path} is not a readable ONNX model: expected a serialized ModelProto, "
                            f"the parser said: {exc}") from exc


def _undecodable_attribute(graph: onnx.GraphProto) -> str | None:
    """`node 'name' attribute 'a'` of the first string attribute that is not UTF-8, else None."""
    for node in graph.node:
        for a in node.attribute:
            texts = [a.s] if a.type == onnx.AttributeProto.STRING else list(a.strings)
            for text in texts:
                try:
                    text.decode("utf-8")
                except UnicodeDecodeError:
                    return f"node {node.name or node.op_type!r} attribute {a.name!r} ({text[:16]!r})"
            if a.type == onnx.AttributeProto.GRAPH and (found := _undecodable_attribute(a.g)):
                return found
    return None


def _cycle(graph: onnx.GraphProto) -> list[str] | None:
    """The names of the nodes on a dependency cycle of `graph`'s top level, else None."""
    producer_of = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    deps = [{producer_of[t] for t in node.input if t in producer_of} for node in graph.node]
    readers: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    for i, d in enumerate(deps):
        for j in d:
            readers[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    while ready:
        for j in readers[ready.pop()]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    stuck = [graph.node[i].name or graph.node[i].op_type for i, w in enumerate(waiting) if w]
    return stuck or None


def validate_input_model(model: onnx.ModelProto, where: str | Path) -> str | None:
    """Refuse a graph the passes would misread: no or too old a default opset, a tensor name given twice,
    a cycle, a string attribute that is not UTF-8. Each OnnxFileError names what was expected and found.
    An opset from 17 up to MIN_OPSET is converted in place (attnx.surgeon.upgrade.upgrade_opset) and the
    note saying from which opset to which, and why, returned; None when the model is kept as it is. Opsets
    MIN_OPSET to 22 stay as they are here (a checked file is checked as written); optimize_model upgrades them.
    """
    opsets = [imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")]
    if not opsets:
        raise OnnxFileError(f"{where}: expected a model that imports the default ONNX opset, found imports of "
                            f"{', '.join(repr(i.domain) for i in model.opset_import) or 'no opset at all'}")
    if opsets[0] < OLDEST_READ:
        raise OnnxFileError(f"{where}: expected default opset {MIN_OPSET} or later (attnx supports "
                            f"{', '.join(map(str, OPSETS))}, and converts {OLDEST_READ} to {MIN_OPSET - 1} itself), "
                            f"found opset {opsets[0]}: convert it first, e.g. with "
                            f"onnx.version_converter.convert_version(model, {MIN_OPSET})")
    if opsets[0] > (newest := onnx.defs.onnx_opset_version()):
        raise OnnxFileError(f"{where}: expected a default opset ONNX defines ({OLDEST_READ} to {newest} here), "
                            f"found opset {opsets[0]}")
    _check_names_and_cycles(model, where)
    if opsets[0] >= MIN_OPSET:
        return None
    converted, note = upgrade_opset(model)
    model.CopyFrom(converted)
    return note


def _check_names_and_cycles(model: onnx.ModelProto, where: str | Path) -> None:
    graph = model.graph
    defined = Counter([i.name for i in graph.input] + [i.name for i in graph.initializer]
                      + [o for n in graph.node for o in n.output if o])
    graph_inputs = {i.name for i in graph.input}
    twice = sorted(name for name, count in defined.items()
                   if count > 1 and not (count == 2 and name in graph_inputs
                                         and name in {i.name for i in graph.initializer}))
    if twice:
        raise OnnxFileError(f"{where}: expected each tensor name defined once, found {', '.join(map(repr, twice[:5]))}"
                            f"{' …' if len(twice) > 5 else ''} defined more than once (as a graph input, an "
                            "initializer or a node output)")
    known = set(defined)
    for node in graph.node:
        if ghost := next((t for t in node.input if t and t not in known), None):
            raise OnnxFileError(f"{where}: expected every tensor a node reads to be defined, found {ghost!r}, read "
                                f"by node {node.name or node.op_type!r}, defined nowhere (no graph input, "
                                "initializer or node output)")
    if (bad := _undecodable_attribute(graph)) or any((bad := _undecodable_attribute(f)) for f in model.functions):
        raise OnnxFileError(f"{where}: expected UTF-8 text in string attributes, found bytes that are not UTF-8 in "
                            f"{bad}")
    if stuck := _cycle(graph):
        raise OnnxFileError(f"{where}: expected an acyclic graph, found a cycle through node(s) "
                            f"{', '.join(map(repr, stuck[:5]))}{' …' if len(stuck) > 5 else ''}")


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that computes `tensor`, or None for graph inputs and initializers."""
    return tensor.inputs[0] if tensor.inputs else None


def producer_op(tensor: gs.Tensor, op: str) -> gs.Node | None:
    node = producer(tensor)
    return node if node is not None and node.op == op else None


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of an initializer or of a Constant node's output; None when it is computed."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        return np.asarray(node.attrs["value"].values)
    return None


def scalar_constant(tensor: gs.Tensor) -> float | None:
    """The number held by a constant with a single element, else None."""
    value = constant_value(tensor)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def is_scalar_shaped(tensor: gs.Tensor) -> bool:
    """True when shape analysis proves every axis has size 1 (rank 0 included)."""
    value = constant_value(tensor)
    if value is not None:
        return value.size == 1
    shape = tensor.shape
    return shape is not None and all(d == 1 for d in shape)


def rank(tensor: gs.Tensor) -> int | None:
    value = constant_value(tensor)
    if value is not None:
        return value.ndim
    return None if tensor.shape is None else len(tensor.shape)


def single_consumer(tensor: gs.Tensor) -> bool:
    """Used by one node only, and not a graph output (graph outputs have no consumer node)."""
    return len(tensor.outputs) == 1


def int_attr(node: gs.Node, name: str, default: int) -> int:
    return int(node.attrs.get(name, default))


class Emitter:
    """Appends nodes to `graph`, named `<prefix>/<op>_<i>` so a report and a viewer can find them."""

    def __init__(self, graph: gs.Graph, prefix: str):
        self.graph, self.prefix = graph, prefix
        self._ids = itertools.count()

    def op(self, op: str, *inputs, attrs: dict | None = None, domain: str | None = None,
           out: gs.Tensor | None = None) -> gs.Tensor:
        """One node `op(*inputs)`; numpy arrays become constants. Returns its (first) output."""
        name = f"{self.prefix}/{op}_{next(self._ids)}"
        outputs = [out] if out is not None else [f"{name}_out"]
        return self.graph.layer(op=op, name=name, inputs=list(inputs), outputs=outputs,
                                attrs=attrs or {}, domain=domain)[0]

    def ints(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    def transpose(self, tensor: gs.Tensor, perm: list[int], out: gs.Tensor | None = None) -> gs.Tensor:
        """Transpose, skipped when `perm` is the identity and no output tensor is imposed."""
        if perm == sorted(perm) and out is None:
            return tensor
        if perm == sorted(perm):
            return self.op("Identity", tensor, out=out)
        return self.op("Transpose", tensor, attrs={"perm": perm}, out=out)

    def relabel(self, tensor: gs.Tensor, have: str, want: str, out: gs.Tensor | None = None) -> gs.Tensor:
        """Permute the axes of `tensor`, labelled `have`, into the order `want`."""
        return self.transpose(tensor, [have.index(c) for c in want], out=out)


def take_over(old: gs.Tensor, new: gs.Tensor, emit: Emitter) -> None:
    """Make `old` the value of `new`, which a node just emitted computes and nothing reads yet.

    `old` keeps its name, its consumers and its place in graph.outputs; its former producer
    gets a fresh tensor in that slot (so a multi-output node keeps its output indices) and
    cleanup() removes it once nothing reads it.
    """
    for node in list(old.inputs):
        node.outputs[node.outputs.index(old)] = gs.Variable(f"{old.name}__replaced", dtype=old.dtype)
    maker = producer(new)
    if maker is None or new.outputs or new in emit.graph.outputs:
        emit.op("Identity", new, out=old)  # `new` is read elsewhere (or is an input): bind by a copy
        return
    maker.outputs[maker.outputs.index(new)] = old
