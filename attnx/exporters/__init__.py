"""torch → ONNX: custom-op translation, dynamic batch and sequence, dtype, opset, local functions."""

from attnx.exporters.onnx_export import DEFAULT_OPSET, DTYPES, OPSETS, default_opset, export
from attnx.exporters.functions import attach_local_functions, verify_local_functions

__all__ = ["DEFAULT_OPSET", "DTYPES", "OPSETS", "attach_local_functions", "default_opset", "export", "verify_local_functions"]
