"""The prefill and decode graphs as TensorRT engines, states handed from one to the next.

The TensorRT twin of `attnx.check.stream.OrtStream`: each graph is read once, retargeted to the
TensorRT form (plugin nodes, `attnx optimize --target trt`) in memory, built with the attnx plugin
library through the loaders of attnx.plugins.engine, and run with Polygraphy's `TrtRunner`.
Without TensorRT, construction fails first, with `require_tensorrt()`'s reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnx.check.parity import load_onnx
from attnx.check.stream import past_names
from attnx.errors import InputError
from attnx.plugins.engine import EngineFromOnnx, ShapeRange, TrtFormFromOnnx, require_tensorrt
from attnx.plugins.library import library_path


class TrtStream:
    """As OrtStream: `start(prompt)` gives (logits, states), `step(token, states)` the next ones."""

    def __init__(self, prefill_path: str | Path, decode_path: str | Path, *, max_len: int, batch: int = 1,
                 precision: str = "fp32", plugin_library: str | Path | None = None):
        require_tensorrt()
        from polygraphy.backend.trt import TrtRunner

        if max_len < 1 or batch < 1:
            raise InputError(f"TrtStream: max_len and batch must be >= 1, got {max_len} and {batch}")
        library = library_path(plugin_library)
        runners, outputs = [], []
        for path in (prefill_path, decode_path):
            model = load_onnx(path)
            outputs.append([o.name for o in model.graph.output])
            engine = EngineFromOnnx(TrtFormFromOnnx(model), precision=precision, plugin_library=library,
                                    seq=ShapeRange(1, max_len, max_len), batch=ShapeRange(1, batch, batch))
            runners.append(TrtRunner(engine))
        self.prefill, self.decode = runners
        self.prefill_outputs, self.decode_outputs = outputs
        self.state_names = past_names(self.prefill_outputs[1:])
        for runner in runners:
            runner.activate()

    def close(self) -> None:
        for runner in (self.prefill, self.decode):
            if runner.is_active:
                runner.deactivate()

    def start(self, prompt: np.ndarray):
        out = self.prefill.infer({"input_ids": prompt})
        logits, *states = (out[name] for name in self.prefill_outputs)
        return logits, dict(zip(self.state_names, states))

    def step(self, token: np.ndarray, states: dict):
        out = self.decode.infer({"input_ids": token, **states})
        logits, *next_states = (out[name] for name in self.decode_outputs)
        return logits, dict(zip(self.state_names, next_states))
