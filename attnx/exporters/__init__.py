"""torch → ONNX: custom-op translation, dynamic batch and sequence, dtype, opset, local functions.

The names below are loaded on first use, so that the CLI reads `formats` (the dtypes and opsets)
without importing torch.
"""

import importlib

_HOME = {"DEFAULT_OPSET": "formats", "DTYPES": "onnx_export", "OPSETS": "formats",
         "attach_local_functions": "functions", "default_opset": "onnx_export", "export": "onnx_export",
         "verify_local_functions": "functions"}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"attnx.exporters.{_HOME[name]}"), name)
    raise AttributeError(f"module 'attnx.exporters' has no attribute {name!r}")
