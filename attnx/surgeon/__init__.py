"""Graph surgery on onnx-graphsurgeon: fusion into attnx ops, reassociation, retargeting.

`optimize_model(model, target, passes)` runs the passes in the order of `pipeline.PASSES`
and converts the result to one of the three forms (`retarget.TARGETS`). The names below are
loaded on first use, so that the CLI reads `names` (passes and forms) without importing onnx.
"""

import importlib

_HOME = {"PASSES": "pipeline", "TARGETS": "names", "optimize_model": "pipeline"}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"attnx.surgeon.{_HOME[name]}"), name)
    raise AttributeError(f"module 'attnx.surgeon' has no attribute {name!r}")
