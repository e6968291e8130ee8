"""Greedy generation with the prefill and decode graphs: the deployment loop, measured."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from polygraphy.logger import G_LOGGER

from attnx.check.providers import resolve_providers
from attnx.check.stream import OrtStream
from attnx.errors import BackendUnavailableError, InputError
from attnx.exporters.stream import export_stream
from attnx.models.zoo import LoadedModel

BACKENDS = ("ort", "trt")


@dataclasses.dataclass
class Generation:
    prompt: list[int]
    tokens: list[int]
    prefill_ms: float
    decode_ms: list[float]  # one per generated token after the first
    state_bytes: int        # all states after the last step

    def summary(self) -> str:
        lines = [f"prompt ({len(self.prompt)} tokens): {self.prompt[:16]}{' …' if len(self.prompt) > 16 else ''}",
                 f"generated ({len(self.tokens)} tokens): {self.tokens}",
                 f"prefill: {self.prefill_ms:.2f} ms for {len(self.prompt)} tokens"]
        if self.decode_ms:
            ordered = sorted(self.decode_ms)
            p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            lines.append(f"decode: median {statistics.median(self.decode_ms):.3f} ms/token, p90 {p90:.3f} ms, "
                         f"over {len(self.decode_ms)} steps")
        lines.append(f"state after {len(self.prompt) + len(self.tokens) - 1} positions: "
                     f"{self.state_bytes / 1024:.1f} KiB")
        return "\n".join(lines)


def random_prompt(vocab_size: int, prompt_len: int, seed: int) -> np.ndarray:
    """The prompt `attnx generate` decodes from, [1, prompt_len] int64: the same for a seed offline and on
    a server (attnx.serve.client), so that both runs can be compared token for token."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (1, prompt_len), generator=generator).numpy()


def generate(loaded: LoadedModel, work_dir: str | Path, *, prompt_len: int = 16, new_tokens: int = 32,
             backend: str = "ort", dtype: str = "fp32", opset: int | None = None, seed: int = 0,
             plugin_library: str | Path | None = None, providers: Sequence[str] | None = None) -> Generation:
    """Export prefill and decode graphs into work_dir, then decode greedily in ONNX Runtime (`ort`, on
    `providers`: Polygraphy-style names in priority order, default cpu; attnx.check.providers) or in
    TensorRT engines built with the attnx plugin library (`trt`)."""
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if prompt_len < 1 or new_tokens < 1:
        raise InputError(f"expected prompt_len and new_tokens >= 1, found prompt_len {prompt_len}, "
                         f"new_tokens {new_tokens}")
    if backend == "trt":
        from attnx.plugins.engine import require_tensorrt

        if providers:
            raise InputError(f"providers ({', '.join(providers)}) are ONNX Runtime's: expected them with "
                             "backend ort, found backend trt")
        require_tensorrt()  # before the export: say at once that it cannot run here
    else:  # before the export: a provider not installed, or a missing plugin library, is said at once
        resolved = resolve_providers(providers, plugin_library=plugin_library, fp16=dtype == "fp16")
    paths = export_stream(loaded, Path(work_dir) / f"{loaded.name}.onnx", "both", dtype=dtype, opset=opset)
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        if backend == "trt":
            from attnx.check.trt_stream import TrtStream

            stream = TrtStream(paths["prefill"], paths["decode"], max_len=prompt_len + new_tokens,
                               precision=dtype, plugin_library=plugin_library)
        else:
            stream = OrtStream(paths["prefill"], paths["decode"], resolved)
    try:
        prompt = random_prompt(loaded.module.vocab_size, prompt_len, seed)
        start = time.perf_counter()
        logits, states = stream.start(prompt)
        prefill_ms = (time.perf_counter() - start) * 1e3
        tokens, decode_ms = [int(logits[0, -1].argmax())], []
        for _ in range(new_tokens - 1):
            start = time.perf_counter()
            logits, states = stream.step(np.array([[tokens[-1]]], dtype=np.int64), states)
            decode_ms.append((time.perf_counter() - start) * 1e3)
            tokens.append(int(logits[0, -1].argmax()))
        return Generation(prompt[0].tolist(), tokens, prefill_ms, decode_ms, sum(v.nbytes for v in states.values()))
    finally:
        if hasattr(stream, "close"):
            stream.close()
