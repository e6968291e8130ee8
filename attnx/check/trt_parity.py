"""Parity of an ONNX file run as a TensorRT engine (the attnx plugin library loaded) against the
eager model in float64 or golden outputs: the twin of `check_parity`, on the same parity core."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from attnx.check.data import DEFAULT_BATCH, DEFAULT_SEQ_LENS
from attnx.check.parity import ParityOptions, compare_with_reference, load_onnx, parity_case
from attnx.check.report import ParityReport
from attnx.models.zoo import LoadedModel
from attnx.plugins import engine  # its loaders looked up at each call: a test can stand in for TensorRT
from attnx.plugins.library import library_path


def check_trt(onnx_path: str | Path, loaded: LoadedModel | None, *, seq_lens: Sequence[int] = DEFAULT_SEQ_LENS,
              batch: int = DEFAULT_BATCH, seed: int | None = None, plugin_library: str | Path | None = None,
              options: ParityOptions | None = None,
              progress: Callable[[str], None] = lambda msg: None) -> ParityReport:
    """`attnx check --backend trt`: the file as a TensorRT engine (Polygraphy TrtRunner) vs the eager
    model in float64 (or golden outputs), on the same inputs; same arguments and ParityReport as
    `check_parity`. The file is read once; the engine is built in its dtype, from its TensorRT form,
    with one profile covering every feed's batch and length."""
    engine.require_tensorrt()
    from polygraphy.backend.trt import TrtRunner

    library = library_path(plugin_library)
    model = load_onnx(onnx_path)
    case = parity_case(model, onnx_path, loaded, seq_lens, batch, seed, options)
    lengths = [n for n in case.lengths if n is not None] or list(seq_lens)
    batches = [int(np.shape(next(iter(feed.values())))[0]) for feed in case.feeds]
    built = engine.EngineFromOnnx(engine.TrtFormFromOnnx(model), precision=case.dtype, plugin_library=library,
                                  seq=engine.ShapeRange(min(lengths), max(lengths), max(lengths)),
                                  batch=engine.ShapeRange(min(batches), max(batches), max(batches)))
    return compare_with_reference(TrtRunner(built, name="tensorrt"), case, loaded, onnx_path, "tensorrt", progress,
                                  options)
