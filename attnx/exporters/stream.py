"""Prefill and decode graphs of a causal model (attention as an RNN, VARIANTS.md).

Linear attention, Performer and TransNormer's NormAttention carry a constant float32 state
per layer (the LinearAttention state input and output); FLASH the state over finished chunks
and the current chunk's keys and values; softmax-style attention (softmax, GAU, the sparse
patterns) a key/value cache, which for `local` stops growing at the window. Each module's
`state_names` and `state_axes` say which; docs/streaming.md tabulates them.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from attnx.exporters.onnx_export import to_onnx
from attnx.files import atomic_outputs, check_output_path
from attnx.models.streaming import decode_model, prefill_model
from attnx.models.zoo import LoadedModel

MODES = ("full", "prefill", "decode", "both")


def stream_paths(path: str | Path, mode: str) -> dict[str, Path]:
    """Where each graph goes: `path` itself for one graph, `<stem>.prefill/.decode.onnx` for both."""
    path = Path(path)
    if mode in ("prefill", "decode"):
        return {mode: path}
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return {m: path.with_name(f"{stem}.{m}.onnx") for m in ("prefill", "decode")}


def export_stream(loaded: LoadedModel, path: str | Path, mode: str, *, dtype: str = "fp32",
                  opset: int | None = None) -> dict[str, Path]:
    """Export the prefill graph, the decode graph, or both; returns {mode: path}.

    The paths are checked before the export starts; both graphs land together or neither does."""
    paths = stream_paths(path, mode)
    for graph_path in paths.values():
        check_output_path(graph_path, "ONNX output", make_parents=True)
    protos = []
    for graph_mode in paths:
        wrapped = prefill_model(loaded) if graph_mode == "prefill" else decode_model(loaded)
        proto = to_onnx(wrapped, dtype=dtype, opset=opset, mode=graph_mode)
        if graph_mode == "decode":
            cache_into_attention(proto)
        protos.append(proto)
    with atomic_outputs(*paths.values()) as staged:
        for proto, staged_path in zip(protos, staged):
            onnx.save(proto, staged_path)
    return paths


def cache_into_attention(model: onnx.ModelProto) -> int:
    """Hand each growing key/value cache to ONNX `Attention` as past_key/past_value.

    Pattern: Attention(q, Concat(past_k, k, axis=2), Concat(past_v, v, axis=2)) with past_* graph
    inputs. Rewrite: Attention(q, k, v, past_key=past_k, past_value=past_v) → (y, present_key,
    present_value), the op's own cache semantics (present = past ⧺ new along the sequence).
    Returns how many nodes were rewritten; `model` is changed in place.
    """
    graph = gs.import_onnx(model)
    graph_inputs = {t.name for t in graph.inputs}

    def cache_concat(tensor):
        producer = tensor.inputs[0] if tensor.inputs else None
        appends_to_past = (producer is not None and producer.op == "Concat" and producer.attrs.get("axis") == 2
                           and len(producer.inputs) == 2 and producer.inputs[0].name in graph_inputs)
        return producer if appends_to_past else None

    rewritten = 0
    for node in [n for n in graph.nodes if n.op == "Attention" and len(n.inputs) == 3 and len(n.outputs) == 1]:
        key, value = node.inputs[1], node.inputs[2]
        concat_k, concat_v = cache_concat(key), cache_concat(value)
        if concat_k is None or concat_v is None:
            continue
        node.inputs = [node.inputs[0], concat_k.inputs[1], concat_v.inputs[1], gs.Variable.empty(),
                       concat_k.inputs[0], concat_v.inputs[0]]
        concat_k.outputs.clear()
        concat_v.outputs.clear()
        node.outputs = [node.outputs[0], key, value]
        rewritten += 1
    if rewritten:
        graph.cleanup().toposort()
        exported = gs.export_onnx(graph)
        exported.metadata_props.extend(model.metadata_props)  # the model's name and fingerprint stay
        onnx.checker.check_model(exported)
        model.CopyFrom(exported)
    return rewritten
