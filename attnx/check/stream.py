"""Streaming parity: prefill on n tokens, then m decode steps, equals the full model on n + m.

Checked at every position, for two runs of the same prompt: the eager model streaming in
float64 (the prefill/decode logic itself: only summation order differs from the full run,
so it is held to 1e-9) and the exported prefill and decode graphs in ONNX Runtime (held to
the file's dtype tolerance). The reference for both is the full eager model in float64.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from polygraphy.logger import G_LOGGER

from attnx.check.compare import compare
from attnx.check.data import DEFAULT_BATCH, DEFAULT_NEW_TOKENS, DEFAULT_PROMPT_LENS, DEFAULT_SEED
from attnx.check.identity import MODEL_KEY, check_same_model, model_record
from attnx.check.parity import load_onnx, model_dtype
from attnx.check.providers import backend_label, check_form, resolve_providers, session_loader
from attnx.check.report import OutputResult, ParityReport
from attnx.check.tolerances import TOLERANCES, Tolerance
from attnx.errors import BackendUnavailableError, InputError
from attnx.models.streaming import Decode, Prefill, streamable
from attnx.models.zoo import LoadedModel

FLOAT64_STREAM = Tolerance(atol=1e-9, rtol=1e-9)


def past_names(present_names: Sequence[str]) -> list[str]:
    return [n.replace("present.", "past.", 1) for n in present_names]


def stream_eager(lm, ids: torch.Tensor, prompt_len: int) -> np.ndarray:
    """Logits [B, n + m, V] from prefill on ids[:, :n] and one decode step per later token."""
    prefill, decode = Prefill(lm), Decode(lm)
    with torch.no_grad():
        out = prefill(ids[:, :prompt_len])
        logits, states = [out[0]], out[1:]
        for t in range(prompt_len, ids.shape[1]):
            out = decode(ids[:, t:t + 1], *states)
            logits.append(out[0])
            states = out[1:]
    return torch.cat(logits, 1).double().numpy()


class OrtStream:
    """The prefill and decode graphs in ONNX Runtime, states handed from one to the next.

    resolved: the execution providers and their options (attnx.check.providers.resolve_providers;
    default CPU only)."""

    def __init__(self, prefill_path: str | Path, decode_path: str | Path,
                 resolved: Sequence[tuple[str, dict]] | None = None):
        resolved = resolve_providers(None) if resolved is None else resolved
        self.label = backend_label(resolved)
        self.prefill = session_loader(Path(prefill_path), resolved)()
        self.decode = session_loader(Path(decode_path), resolved)()
        self.state_names = past_names([o.name for o in self.prefill.get_outputs()][1:])
        expected = [i.name for i in self.decode.get_inputs()][1:]
        if expected != self.state_names:
            raise InputError(f"{decode_path} takes states {expected}, but {prefill_path} gives "
                             f"{self.state_names}: not a prefill/decode pair of one model")

    def start(self, prompt: np.ndarray):
        logits, *states = self.prefill.run(None, {"input_ids": prompt})
        return logits, dict(zip(self.state_names, states))

    def step(self, token: np.ndarray, states: dict):
        logits, *next_states = self.decode.run(None, {"input_ids": token, **states})
        return logits, dict(zip(self.state_names, next_states))

    def run(self, ids: np.ndarray, prompt_len: int) -> np.ndarray:
        logits, states = self.start(ids[:, :prompt_len])
        out = [logits]
        for t in range(prompt_len, ids.shape[1]):
            logits, states = self.step(ids[:, t:t + 1], states)
            out.append(logits)
        return np.concatenate(out, 1)


def _rows(got: np.ndarray, ref: np.ndarray, prompt_len: int, tol: Tolerance) -> list[OutputResult]:
    """One row for the prompt's positions, then one per decoded position."""
    spans = [(0, prompt_len, f"logits[:{prompt_len}]")]
    spans += [(t, t + 1, f"logits[{t}]") for t in range(prompt_len, ref.shape[1])]
    rows = []
    for start, end, label in spans:
        r = compare({"logits": got[:, start:end]}, {"logits": ref[:, start:end]}, tol)["logits"]
        rows.append(OutputResult(label, end, list(got[:, start:end].shape), float(r.max_absdiff),
                                 float(r.max_reldiff), tol.atol, tol.rtol, bool(r)))
    return rows


def check_stream(loaded: LoadedModel, prefill_path: str | Path, decode_path: str | Path, *,
                 prompt_lens: Sequence[int] = DEFAULT_PROMPT_LENS, new_tokens: int = DEFAULT_NEW_TOKENS,
                 batch: int = DEFAULT_BATCH, seed: int | None = None, providers: Sequence[str] | None = None,
                 plugin_library: str | Path | None = None,
                 progress: Callable[[str], None] = lambda msg: None) -> list[ParityReport]:
    """[eager float64 stream report, ONNX Runtime stream report] against the full float64 model.

    providers: Polygraphy-style ONNX Runtime providers in priority order (tensorrt, cuda, cpu; default
    cpu), configured by attnx.check.providers; `plugin_library` is tensorrt's, and an fp16 file builds
    TensorRT engines with fp16 enabled."""
    prefill, decode = load_onnx(prefill_path), load_onnx(decode_path)
    check_same_model(prefill, loaded, prefill_path)
    if model_record(decode) != model_record(prefill):
        names = [model_record(m).get(MODEL_KEY, "no name") for m in (decode, prefill)]
        raise InputError(f"{decode_path} records another model or other weights than {prefill_path} ({names[0]} "
                         f"and {names[1]}, fingerprints differ): not a prefill/decode pair of one model")
    check_same_model(decode, loaded, decode_path)
    dtype = model_dtype(prefill)
    resolved = resolve_providers(providers, plugin_library=plugin_library, fp16=dtype == "fp16")
    if dtype == "bf16" and resolved[0][0] == "CPUExecutionProvider":
        raise BackendUnavailableError("ONNX Runtime's CPU provider has no bfloat16 kernels; a bf16 stream "
                                      "needs a GPU backend")
    for model, path in ((prefill, prefill_path), (decode, decode_path)):
        check_form(model, resolved, str(path))
    if min(prompt_lens) < 1 or new_tokens < 1 or batch < 1:
        raise InputError(f"prompt lengths, new tokens and batch must be >= 1, got {list(prompt_lens)}, "
                         f"{new_tokens}, {batch}")
    lm64 = copy.deepcopy(streamable(loaded)).double().eval()
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        ort_stream = OrtStream(prefill_path, decode_path, resolved)
    seed = DEFAULT_SEED if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    eager_rows, ort_rows = [], []
    for n in prompt_lens:
        ids = torch.randint(0, lm64.vocab_size, (batch, n + new_tokens), generator=generator)
        with torch.no_grad():
            full = lm64(ids).numpy()
        eager_rows += _rows(stream_eager(lm64, ids, n), full, n, FLOAT64_STREAM)
        ort_rows += _rows(ort_stream.run(ids.numpy(), n), full, n, TOLERANCES[dtype])
        progress(f"prompt {n} + {new_tokens} decode steps: "
                 f"{'ok' if all(r.passed for r in eager_rows + ort_rows) else 'MISMATCH'}")
    shapes = {"input_ids": ["batch", "seq"]}
    label = f"prefill {', '.join(map(str, prompt_lens))} + decode {new_tokens}"
    return [ParityReport(loaded.name, str(prefill_path), f"eager-float64 stream ({label})", "eager-float64 full",
                         "fp64", seed, shapes, eager_rows),
            ParityReport(loaded.name, f"{prefill_path} + {decode_path}", f"{ort_stream.label} stream ({label})",
                         "eager-float64 full", dtype, seed, shapes, ort_rows)]
