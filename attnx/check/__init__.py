"""Every parity run, through Polygraphy: ONNX Runtime, TensorRT engines, prefill/decode streams;
runners, data, tolerances, report.

The names below are loaded on first use, so that `attnx.check.tolerances` imports where Polygraphy
is not installed (tools/gpu_check.py on a GPU machine) and the CLI reads the defaults cheaply.
"""

import importlib

_HOME = {"DEFAULT_BATCH": "data", "DEFAULT_NEW_TOKENS": "data", "DEFAULT_PROMPT_LENS": "data",
         "DEFAULT_SEED": "data", "DEFAULT_SEQ_LENS": "data", "check_parity": "parity", "check_stream": "stream", "check_trt": "trt_parity",
         "load_onnx": "parity", "ParityOptions": "parity", "OutputResult": "report", "ParityReport": "report", "TOLERANCES": "tolerances"}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"attnx.check.{_HOME[name]}"), name)
    raise AttributeError(f"module 'attnx.check' has no attribute {name!r}")
