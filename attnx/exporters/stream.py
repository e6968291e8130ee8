"""Prefill and decode graphs of a causal model (attention as an RNN, VARIANTS.md).

`linear-tiny` carries a constant float32 state per layer (the LinearAttention state input and
output); `softmax-tiny` a key/value cache that grows by one position per token.
"""

from __future__ import annotations

from pathlib import Path

from attnx.exporters.onnx_export import DEFAULT_OPSET, export
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
                  opset: int = DEFAULT_OPSET) -> dict[str, Path]:
    """Export the prefill graph, the decode graph, or both; returns {mode: path}."""
    paths = stream_paths(path, mode)
    for graph_mode, graph_path in paths.items():
        wrapped = prefill_model(loaded) if graph_mode == "prefill" else decode_model(loaded)
        export(wrapped, graph_path, dtype=dtype, opset=opset, mode=graph_mode)
    return paths
