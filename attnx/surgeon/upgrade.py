"""Reading an older default opset: `upgrade_opset` converts a model to the opset the fused ops need.

TorchScript exports default to opset 17 to 20, dynamo exports to 18. ONNX `Attention` and
`RotaryEmbedding` exist from opset 23, so a model below 23 can never have them written in. It is
converted with onnx.version_converter to 23 when the installed ONNX Runtime runs opset 23, else to
18 (the oldest opset the passes build nodes for). A model below 18 that does not convert cannot be
read (OnnxFileError); one at 18 to 22 that does not convert is kept as it is, and the note says why.
"""

from __future__ import annotations

import functools

import onnx

from attnx.errors import OnnxFileError

FUSED_OPSET = 23  # ONNX Attention and RotaryEmbedding
FLOOR_OPSET = 18  # the passes build nodes of this opset and later
OLDEST_READ = 17  # the oldest opset converted: what torch's TorchScript exporter writes by default


@functools.lru_cache(maxsize=1)
def runtime_runs_opset(opset: int = FUSED_OPSET) -> bool:
    """True when the installed onnxruntime loads a model of default opset `opset`."""
    import onnxruntime as ort

    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's own error types: an opset it does not know
        return False
    return True


def default_opset(model: onnx.ModelProto) -> int | None:
    return next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), None)


def upgrade_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """(the model at opset 23, or 18 where ONNX Runtime lacks 23; a note saying from, to and why, None when
    nothing changed). Models at the target or later, or below OLDEST_READ, are returned unchanged (the
    caller refuses the latter). The input is not modified."""
    have = default_opset(model)
    to = FUSED_OPSET if runtime_runs_opset(FUSED_OPSET) else FLOOR_OPSET
    if have is None or have >= to or have < OLDEST_READ:
        return model, None
    why = ("ONNX Attention and RotaryEmbedding need opset 23, which the installed ONNX Runtime runs"
           if to == FUSED_OPSET else
           "the passes build opset-18 nodes; the installed ONNX Runtime does not run opset 23, so attention "
           "and RoPE cannot become ONNX Attention / RotaryEmbedding")
    try:
        converted = onnx.version_converter.convert_version(model, to)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises RuntimeError / ValidationError / its C++ errors
        found = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if have >= FLOOR_OPSET:
            return model, (f"kept opset {have}: converting it to opset {to} failed ({found}), so the fusions that "
                           f"need opset {FUSED_OPSET} report opset_supports_op")
        raise OnnxFileError(f"expected a model onnx.version_converter converts from opset {have} to {to} "
                            f"(attnx reads opsets {OLDEST_READ} and later this way), found that it fails: "
                            f"{found}") from exc
    converted.ir_version = max(converted.ir_version, model.ir_version)
    return converted, f"converted from opset {have} to opset {to}: {why}"
