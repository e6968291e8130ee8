"""Parity of an ONNX file run as a TensorRT engine (the attnx plugin library loaded) against the
eager model in float64: the twin of `check_parity`, on the same parity core."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from attnx.check.data import DEFAULT_BATCH, DEFAULT_SEQ_LENS
from attnx.check.parity import compare_with_eager, load_onnx, parity_case
from attnx.check.report import ParityReport
from attnx.models.zoo import LoadedModel
from attnx.plugins import engine  # its loaders looked up at each call: a test can stand in for TensorRT
from attnx.plugins.library import library_path


def check_trt(onnx_path: str | Path, loaded: LoadedModel, *, seq_lens: Sequence[int] = DEFAULT_SEQ_LENS,
              batch: int = DEFAULT_BATCH, seed: int | None = None, plugin_library: str | Path | None = None,
              progress: Callable[[str], None] = lambda msg: None) -> ParityReport:
    """`attnx check --backend trt`: the file as a TensorRT engine (Polygraphy TrtRunner) vs the eager
    model in float64, on the same fresh inputs; same arguments and ParityReport as `check_parity`.
    The file is read once; the engine is built in its dtype, from its TensorRT form, with one
    profile covering `batch` and every length in `seq_lens`."""
    engine.require_tensorrt()
    from polygraphy.backend.trt import TrtRunner

    library = library_path(plugin_library)
    model = load_onnx(onnx_path)
    case = parity_case(model, onnx_path, loaded, seq_lens, batch, seed)
    longest = max(case.seq_lens)
    built = engine.EngineFromOnnx(engine.TrtFormFromOnnx(model), precision=case.dtype, plugin_library=library,
                                  seq=engine.ShapeRange(min(case.seq_lens), longest, longest),
                                  batch=engine.ShapeRange(batch, batch, batch))
    return compare_with_eager(TrtRunner(built, name="tensorrt"), case, loaded, onnx_path, "tensorrt", progress)
