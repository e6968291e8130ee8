"""Exporting public models (and plain-torch modules) as users do, and checking attnx optimize on them.

`export_as(module, inputs, exporter, opset, dynamic)` writes what one of torch's exporters writes:
"dynamo" (torch.onnx.export(dynamo=True) with its optimizer), "dynamo-raw" (optimize=False) or
"torchscript" (dynamo=False). `dynamic` maps input index → {axis: name}. `assert_close_outputs`
compares ONNX Runtime's outputs of two files on the same feeds.

timm imports torchvision at import time (FrozenBatchNorm2d, data transforms and data sets, none
of which a ViT builds). PyPI's torchvision is a CUDA build that cannot be imported
beside the CPU torch the tests run on, so the tests install timm with --no-deps and `import_timm`
stands in modules for the torchvision names timm reads at import (attnx.bench._timm).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnxruntime as ort
import torch

from attnx.bench._timm import import_timm  # noqa: F401  (timm without torchvision: one stand-in for bench and tests)

EXPORTERS = ("dynamo", "dynamo-raw", "torchscript")
# float32 fusion changes the order of sums of at most a few thousand terms (~1e-6 relative);
# a wrong mask, scale or normaliser moves outputs by 1e-2 or more
RTOL = 1e-4


def export_as(module, inputs, exporter: str, opset: int = 23, dynamic: dict | None = None):
    """The ModelProto `exporter` writes for module(*inputs); `dynamic` {input index: {axis: name}}."""
    names = [f"x{i}" for i in range(len(inputs))]
    dynamic = dynamic or {}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        module = module.eval()
        if exporter in ("dynamo", "dynamo-raw"):
            dims = {}
            shapes = tuple({a: dims.setdefault(n, torch.export.Dim(n, min=1, max=4096)) for a, n in
                            dynamic.get(i, {}).items()} or None for i in range(len(inputs)))
            program = torch.onnx.export(module, tuple(inputs), dynamo=True, opset_version=opset,
                                        optimize=exporter == "dynamo", input_names=names, verbose=False,
                                        dynamic_shapes=shapes if dynamic else None)
            return program.model_proto
        if exporter != "torchscript":
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
        import io

        import onnx
        buffer = io.BytesIO()
        torch.onnx.export(module, tuple(inputs), buffer, dynamo=False, opset_version=opset, input_names=names,
                          dynamic_axes={names[i]: axes for i, axes in dynamic.items()})
        return onnx.load_from_string(buffer.getvalue())


def run(model, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def ops_of(model) -> list[tuple[str, str]]:
    """(domain, op_type) of every node of the main graph."""
    return [(n.domain, n.op_type) for n in model.graph.node]


def assert_close_outputs(before, after, feeds_list, rtol: float = RTOL):
    """ORT outputs of `after` within `rtol` of `before`'s, relative to each output's largest value."""
    for feeds in feeds_list:
        for want, got in zip(run(before, feeds), run(after, feeds)):
            scale = max(float(np.abs(want).max()), 1e-6)
            err = float(np.abs(got.astype(np.float64) - want).max()) / scale
            assert err <= rtol, f"relative error {err:.2e} > {rtol:g} at input shapes " \
                                f"{ {k: v.shape for k, v in feeds.items()} }"


