"""Parity runs through Polygraphy: runners, data, tolerances, report.

The names below are loaded on first use, so that `attnx.check.tolerances` imports where Polygraphy
is not installed (tools/gpu_check.py on a GPU machine).
"""

import importlib

_HOME = {"DEFAULT_SEQ_LENS": "parity", "check_parity": "parity", "load_onnx": "parity",
         "OutputResult": "report", "ParityReport": "report", "TOLERANCES": "tolerances"}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"attnx.check.{_HOME[name]}"), name)
    raise AttributeError(f"module 'attnx.check' has no attribute {name!r}")
