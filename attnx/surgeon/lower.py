"""Lowering: standard ONNX `Attention` and `RotaryEmbedding` (opset 23) into primitive ops, for a TensorRT
whose ONNX parser lacks them (attnx.surgeon.trt_versions) and for ONNX Runtime's TensorRT provider.

The lowering reads the op's attributes and the inputs' ranks and static head sizes only (the spec's
semantics, onnx.reference's implementation), never the spelling of attnx's own exports:

Attention  Q, K, V [B, H, S, D] or [B, S, H·D] (q_num_heads / kv_num_heads), past key/value concatenated
           on the sequence axis (present_key / present_value outputs), K and V heads repeated for
           grouped-query attention, then Softmax(softcap(Q·s·Kᵀ) + mask)·V with s = `scale` or 1/√D, a
           bool mask as Where(mask, ·, −inf), a float mask added, `is_causal` as Where(j > i + past, −inf,
           ·) and `softmax_precision` as a Cast around the Softmax: the MatMul–Softmax–MatMul chain
           TensorRT's attention fusion takes. Not lowered (refused, saying so): the qk_matmul_output
           output, opset-24 nonpad_kv_seqlen and window attributes. A row every key of which is masked
           is NaN here where the spec asks for 0 (the spec's guard, a Where after the Softmax, would
           break the fusion; causal masks never mask a whole row).
RotaryEmbedding  x [B, H, S, D] or [B, S, H·D] (num_heads): cos/sin gathered by position_ids when given,
           the first `rotary_embedding_dim` channels rotated (halves, or even/odd pairs when
           `interleaved`) by Slice/Mul/Sub/Add/Concat, the rest passed through.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from attnx.errors import OnnxFileError

_STANDARD = ("", "ai.onnx")
_ATTENTION_ATTRS = {"is_causal", "scale", "softcap", "q_num_heads", "kv_num_heads", "qk_matmul_output_mode",
                    "softmax_precision"}
_INT_MAX = np.iinfo(np.int64).max


class _Emit:
    """Appends primitive nodes to `graph` in place of one node, named after it."""

    def __init__(self, graph: gs.Graph, node: gs.Node, np_dtype):
        self.graph, self.base, self.dtype, self.count = graph, node.name or node.op, np_dtype, 0

    def _name(self, what: str) -> str:
        self.count += 1
        return f"{self.base}/lowered/{what}_{self.count}"

    def op(self, op_type: str, *inputs, out: gs.Variable | None = None, **attrs) -> gs.Variable:
        out = out if out is not None else gs.Variable(self._name(op_type))
        self.graph.nodes.append(gs.Node(op_type, name=self._name(op_type + "_node"), attrs=attrs,
                                        inputs=list(inputs), outputs=[out]))
        return out

    def ints(self, *values: int) -> gs.Constant:
        return gs.Constant(self._name("ints"), np.array(values, dtype=np.int64))

    def scalar(self, value: float) -> gs.Constant:
        return gs.Constant(self._name("value"), np.array(value, dtype=self.dtype))

    def shape(self, x, start: int, end: int) -> gs.Variable:
        return self.op("Shape", x, start=start, end=end)

    def slice(self, x, start: int, end: int, step: int = 1) -> gs.Variable:
        return self.op("Slice", x, self.ints(start), self.ints(end), self.ints(-1), self.ints(step))


def _present(t) -> bool:
    return t is not None and getattr(t, "name", "") != ""


def _used(t: gs.Variable, graph: gs.Graph) -> bool:
    return _present(t) and (bool(t.outputs) or t in graph.outputs)


def _static(shape, axis: int) -> int | None:
    if shape is None or len(shape) <= abs(axis):
        return None
    d = shape[axis]
    return d if isinstance(d, int) and d > 0 else None


def _np_dtype(elem_type: int | None):
    if elem_type is None:
        return None
    return helper.tensor_dtype_to_np_dtype(elem_type)


def _refuse(node: gs.Node, why: str) -> OnnxFileError:
    return OnnxFileError(f"{node.op} node '{node.name}' cannot be lowered to primitive ops: {why}")


def _to_heads(e: _Emit, x, heads: int) -> gs.Variable:
    """[B, S, H·D] -> [B, H, S, D]."""
    return e.op("Transpose", e.op("Reshape", x, e.ints(0, 0, heads, -1)), perm=[0, 2, 1, 3])


def _lower_attention(graph: gs.Graph, node: gs.Node, elem_types: dict[str, int]) -> None:
    extra = set(node.attrs) - _ATTENTION_ATTRS
    if extra:
        raise _refuse(node, f"attributes {', '.join(sorted(extra))} are not lowered (expected only the "
                            f"opset-23 ones: {', '.join(sorted(_ATTENTION_ATTRS))})")
    ins = list(node.inputs) + [None] * (6 - len(node.inputs))
    if len(node.inputs) > 6 and any(_present(t) for t in node.inputs[6:]):
        raise _refuse(node, "the nonpad_kv_seqlen input (opset 24) is not lowered")
    q, k, v, mask, past_k, past_v = ins[:6]
    outs = list(node.outputs) + [None] * (4 - len(node.outputs))
    if outs[3] is not None and _used(outs[3], graph):
        raise _refuse(node, "its qk_matmul_output output is read; only Y, present_key and present_value are lowered")
    if _present(past_k) != _present(past_v):
        raise _refuse(node, "past_key and past_value must come together")
    dtype = _np_dtype(elem_types.get(q.name))
    if dtype is None:
        raise _refuse(node, f"the element type of Q ('{q.name}') is unknown after shape inference")
    e = _Emit(graph, node, dtype)
    rank = len(q.shape) if q.shape is not None else None
    a = node.attrs
    if rank == 3:
        hq, hkv = int(a.get("q_num_heads", 0)), int(a.get("kv_num_heads", 0))
        if hq <= 0 or hkv <= 0:
            raise _refuse(node, f"3-D inputs need q_num_heads and kv_num_heads, found {hq} and {hkv}")
        hidden = _static(q.shape, 2)
        head = hidden // hq if hidden else None
        q, k, v = _to_heads(e, q, hq), _to_heads(e, k, hkv), _to_heads(e, v, hkv)
    elif rank == 4:
        hq, hkv, head = _static(q.shape, 1), _static(k.shape, 1), _static(q.shape, 3)
        if hq is None or hkv is None:
            raise _refuse(node, f"the head counts of Q {q.shape} and K {k.shape} must be static")
    else:
        raise _refuse(node, f"expected Q of rank 3 or 4, found shape {q.shape}")
    if _present(past_k):
        k = e.op("Concat", past_k, k, axis=2)
        v = e.op("Concat", past_v, v, axis=2)
    for given, out in ((k, outs[1]), (v, outs[2])):
        if out is not None and _present(out):
            e.op("Identity", given, out=out)
    if hq != hkv:
        if hq % hkv:
            raise _refuse(node, f"q heads {hq} are not a multiple of kv heads {hkv}")
        reps = e.ints(1, 1, hq // hkv, 1, 1)

        def repeat(t):  # [B, Hkv, L, D] -> [B, Hkv·r, L, D], each kv head repeated r times in a row
            shape = e.op("Concat", e.shape(t, 0, 1), e.ints(hq), e.shape(t, 2, 4), axis=0)
            return e.op("Reshape", e.op("Expand", e.op("Unsqueeze", t, e.ints(2)), reps), shape)
        k, v = repeat(k), repeat(v)
    scale = a.get("scale")
    if scale is None:
        if head is None:
            raise _refuse(node, "the default scale 1/√D needs a static head size")
        scale = 1.0 / np.sqrt(head)
    scores = e.op("MatMul", e.op("Mul", q, e.scalar(scale)), e.op("Transpose", k, perm=[0, 1, 3, 2]))
    softcap = float(a.get("softcap", 0.0))
    if softcap > 0:
        cap = e.scalar(softcap)
        scores = e.op("Mul", e.op("Tanh", e.op("Div", scores, cap)), cap)
    neg_inf = e.scalar(-np.inf)
    if _present(mask):
        if elem_types.get(mask.name) == onnx.TensorProto.BOOL:
            scores = e.op("Where", mask, scores, neg_inf)
        else:
            scores = e.op("Add", scores, mask)
    if int(a.get("is_causal", 0)):
        zero, one = e.ints(0), e.ints(1)
        n_q = e.op("Squeeze", e.shape(q, 2, 3), zero)
        n_k = e.op("Squeeze", e.shape(k, 2, 3), zero)
        rows = e.op("Unsqueeze", e.op("Range", e.op("Squeeze", zero, zero), n_q, e.op("Squeeze", one, zero)), one)
        if _present(past_k):
            rows = e.op("Add", rows, e.shape(past_k, 2, 3))
        cols = e.op("Unsqueeze", e.op("Range", e.op("Squeeze", zero, zero), n_k, e.op("Squeeze", one, zero)), zero)
        scores = e.op("Where", e.op("Less", rows, cols), neg_inf, scores)
    precision, elem = int(a.get("softmax_precision", 0)), elem_types[node.inputs[0].name]
    if precision and precision != elem:
        probs = e.op("Cast", e.op("Softmax", e.op("Cast", scores, to=precision), axis=-1), to=elem)
    else:
        probs = e.op("Softmax", scores, axis=-1)
    y_out = outs[0]
    if rank == 3:
        y = e.op("MatMul", probs, v)
        e.op("Reshape", e.op("Transpose", y, perm=[0, 2, 1, 3]), e.ints(0, 0, -1), out=y_out)
    else:
        e.op("MatMul", probs, v, out=y_out)


def _lower_rotary(graph: gs.Graph, node: gs.Node, elem_types: dict[str, int]) -> None:
    ins = list(node.inputs) + [None] * (4 - len(node.inputs))
    x, cos, sin, positions = ins[:4]
    e = _Emit(graph, node, _np_dtype(elem_types.get(x.name)))
    a = node.attrs
    rank = len(x.shape) if x.shape is not None else None
    if rank == 3:
        heads = int(a.get("num_heads", 0))
        if heads <= 0:
            raise _refuse(node, f"3-D input needs num_heads, found {heads}")
        hidden = _static(x.shape, 2)
        head = hidden // heads if hidden else None
        work, token_axis = e.op("Reshape", x, e.ints(0, 0, heads, -1)), 1  # [B, S, H, D]
    elif rank == 4:
        head, work, token_axis = _static(x.shape, 3), x, 2  # [B, H, S, D]
    else:
        raise _refuse(node, f"expected an input of rank 3 or 4, found shape {x.shape}")
    rd = int(a.get("rotary_embedding_dim", 0)) or head
    if rd is None:
        half = _static(cos.shape, -1)
        rd = 2 * half if half else None
    if rd is None or head is None:
        raise _refuse(node, "the head size and rotary_embedding_dim must be static")
    if _present(positions):
        cos, sin = e.op("Gather", cos, positions, axis=0), e.op("Gather", sin, positions, axis=0)
    # [B, S, rd/2] -> broadcast over the head axis of the working layout
    head_axis = 1 if token_axis == 2 else 2
    cos, sin = e.op("Unsqueeze", cos, e.ints(head_axis)), e.op("Unsqueeze", sin, e.ints(head_axis))
    rot = work if rd == head else e.slice(work, 0, rd)
    if int(a.get("interleaved", 0)):
        x1, x2 = e.slice(rot, 0, rd, 2), e.slice(rot, 1, rd, 2)
    else:
        x1, x2 = e.slice(rot, 0, rd // 2), e.slice(rot, rd // 2, rd)
    real = e.op("Sub", e.op("Mul", cos, x1), e.op("Mul", sin, x2))
    imag = e.op("Add", e.op("Mul", sin, x1), e.op("Mul", cos, x2))
    if int(a.get("interleaved", 0)):
        pairs = e.op("Concat", e.op("Unsqueeze", real, e.ints(-1)), e.op("Unsqueeze", imag, e.ints(-1)), axis=-1)
        rotated = e.op("Reshape", pairs, e.ints(0, 0, 0, -1))
    else:
        rotated = e.op("Concat", real, imag, axis=-1)
    if rd != head:
        rotated = e.op("Concat", rotated, e.slice(work, rd, _INT_MAX), axis=-1)
    y = node.outputs[0]
    if rank == 3:
        e.op("Reshape", rotated, e.ints(0, 0, -1), out=y)
    else:
        e.op("Identity", rotated, out=y)


_LOWER = {"Attention": _lower_attention, "RotaryEmbedding": _lower_rotary}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]
             if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def lower_standard_ops(model: onnx.ModelProto, lower) -> tuple[onnx.ModelProto, dict[str, int]]:
    """`model` with every standard Attention / RotaryEmbedding node for which `lower(op_type, outputs)` holds
    replaced by primitive ops, and the count lowered per op type. `model` is shape-inferred here and not
    modified; a node that cannot be lowered is an OnnxFileError saying why."""
    from attnx.surgeon.graph import import_graph

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    types = _elem_types(inferred)
    graph = import_graph(inferred)
    counts: dict[str, int] = {}
    for node in list(graph.nodes):
        if (node.domain or "") not in _STANDARD or node.op not in _LOWER:
            continue
        n_out = sum(1 for t in node.outputs if _present(t))
        if not lower(node.op, n_out):
            continue
        _LOWER[node.op](graph, node, types)
        node.outputs.clear()
        node.inputs.clear()
        counts[node.op] = counts.get(node.op, 0) + 1
    if not counts:
        return model, counts
    out = gs.export_onnx(graph.cleanup().toposort(), do_type_check=False)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    kept = {(fn.domain, fn.name, fn.overload) for fn in out.functions}
    out.functions.extend(f for f in model.functions if (f.domain, f.name, f.overload) not in kept)
    return onnx.shape_inference.infer_shapes(out, data_prop=True), counts
