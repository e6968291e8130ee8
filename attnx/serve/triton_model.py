"""attnx files on Triton's Python backend: `attnx triton` copies this file to REPO/<name>/1/model.py.

Full mode: `input_ids [B, N]` → `logits [B, N, V]` through the full graph. Stream mode, behind the
sequence batcher: a request with START runs the prefill graph on its tokens and keeps the states
(`present.*`) under its correlation ID; a later request runs the decode graph once per token from
those states; END drops them. Every response carries `logits [1, n, V]`, the greedy `next_token [1]`
and `sequences_held [1]` (how many sequences this instance holds states for). A sequence idle longer
than `attnx_idle_timeout_s` (the batcher's max_sequence_idle_microseconds) is freed. A bad request
gets an error response naming what was expected and what was found; the other requests of the
batch, and every other sequence, go on as if it had not come.

Two facts of the bundled server shape the start of this file. Triton's Python backend stub starts
with the system interpreter's paths, not the environment attnx is installed in, so the environment's
site-packages (recorded in config.pbtxt as `attnx_site_packages`) go on sys.path before numpy is
imported. And the stub's numpy bridge (pb_utils.Tensor(name, array), Tensor.as_numpy) is built for
numpy 1; under numpy 2 it reads and writes wrong data, so tensors cross it through DLPack.
"""

import json
import os
import re
import site
import sys
import threading
import time
from pathlib import Path

SITE_PACKAGES_KEY = "attnx_site_packages"


def _recorded_site_packages() -> list[str]:
    config = (Path(__file__).resolve().parents[1] / "config.pbtxt").read_text(encoding="utf-8")
    found = re.search(r'key:\s*"' + SITE_PACKAGES_KEY + r'"\s*value\s*\{\s*string_value:\s*"([^"]*)"', config)
    return [p for p in found.group(1).split(os.pathsep) if p] if found else []


def _put_site_packages_first(paths: list[str]) -> None:
    """addsitedir runs the folders' .pth files (an editable install of attnx is one); the folders
    then go before the system's, so that the environment's numpy is the one imported."""
    before = list(sys.path)
    for path in paths:
        if os.path.isdir(path):
            site.addsitedir(path)
    sys.path[:] = [p for p in sys.path if p not in before] + before


_put_site_packages_first(_recorded_site_packages())

import numpy as np  # noqa: E402  (after the site-packages above)
import triton_python_backend_utils as pb_utils  # noqa: E402


def _quiet_consumed_capsules(hook=sys.unraisablehook):
    """numpy's DLPack capsule destructor reports a capsule the stub has consumed and renamed as an
    unraisable ValueError; the tensor is fine, so that one report is dropped."""
    def unraisable(info):
        if not (isinstance(info.exc_value, ValueError) and "PyCapsule_GetPointer" in str(info.exc_value)):
            hook(info)
    sys.unraisablehook = unraisable


_quiet_consumed_capsules()


class RequestError(Exception):
    """A request this model refuses; its message goes back to the client as the response's error."""


def _input(request, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise RequestError(f"expected an input {name!r}, found none")
    return np.from_dlpack(tensor)


def _output(name: str, array: np.ndarray):
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array).__dlpack__())


def _flag(request, name: str) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return tensor is not None and bool(np.from_dlpack(tensor).reshape(-1)[0])


class TritonPythonModel:
    def initialize(self, args):
        from attnx.check.providers import resolve_providers, session_loader

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.mode = params["attnx_mode"]
        self.idle_timeout_s = float(params["attnx_idle_timeout_s"])
        resolved = resolve_providers(params["attnx_providers"].split(","))
        files = json.loads(params["attnx_files"])
        self.sessions = {role: session_loader(version_dir / name, resolved)() for role, name in files.items()}
        first = self.sessions["full" if self.mode == "full" else "prefill"]
        self.vocab_size = first.get_outputs()[0].shape[-1]
        if self.mode == "stream":
            self.state_names = [o.name.replace("present.", "past.", 1) for o in first.get_outputs()[1:]]
        self.sequences = {}  # correlation ID → (states by name, last use on the monotonic clock)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        if self.mode == "stream":
            # a sequence abandoned without END is freed even when no other request comes
            self.reaper = threading.Thread(target=self._reap_idle, daemon=True)
            self.reaper.start()

    def _reap_idle(self):
        while not self.stop.wait(min(1.0, self.idle_timeout_s / 4)):
            self._free_idle()

    def _free_idle(self):
        now = time.monotonic()
        with self.lock:
            for corrid in [c for c, (_, used) in self.sequences.items() if now - used > self.idle_timeout_s]:
                del self.sequences[corrid]

    def _tokens(self, request, rank: int) -> np.ndarray:
        ids = _input(request, "input_ids")
        if ids.dtype != np.int64 or ids.ndim != rank or ids.shape[-1] < 1 or (rank == 2 and ids.shape[0] < 1):
            raise RequestError(f"expected input_ids of int64 [{'B, ' if rank == 2 else ''}N] with N >= 1, "
                               f"found {ids.dtype} {list(ids.shape)}")
        outside = ids[(ids < 0) | (ids >= self.vocab_size)]
        if outside.size:
            raise RequestError(f"expected token ids in [0, {self.vocab_size}), found {int(outside[0])}")
        return ids

    def _full(self, request):
        ids = self._tokens(request, 2)
        logits = self.sessions["full"].run(["logits"], {"input_ids": ids})[0]
        return [_output("logits", logits), _output("next_token", logits[:, -1].argmax(-1).astype(np.int64)[:, None])]

    def _stream(self, request):
        if not _flag(request, "READY"):
            raise RequestError("expected a ready request (READY 1), found READY 0")
        corrid = int(_input(request, "CORRID").reshape(-1)[0])
        start, end = _flag(request, "START"), _flag(request, "END")
        ids = self._tokens(request, 2)
        if ids.shape[0] != 1:
            raise RequestError(f"expected one sequence per request (input_ids [1, N]), found {list(ids.shape)}")
        with self.lock:
            held = self.sequences.get(corrid)
        if start:
            logits, *states = self.sessions["prefill"].run(None, {"input_ids": ids})
            states = dict(zip(self.state_names, states))
        elif held is None:
            raise RequestError(f"sequence {corrid}: expected START on its first request, found a decode step for "
                               f"a correlation ID this model holds no state for (never started, ended, or freed "
                               f"after {self.idle_timeout_s:g} s idle)")
        else:
            states, steps = held[0], []
            for t in range(ids.shape[1]):
                logits, *next_states = self.sessions["decode"].run(None, {"input_ids": ids[:, t:t + 1], **states})
                states = dict(zip(self.state_names, next_states))
                steps.append(logits)
            logits = np.concatenate(steps, 1)
        with self.lock:
            if end:
                self.sequences.pop(corrid, None)
            else:
                self.sequences[corrid] = (states, time.monotonic())
            count = len(self.sequences)
        return [_output("logits", logits), _output("next_token", logits[:, -1].argmax(-1).astype(np.int64)[:, None]),
                _output("sequences_held", np.array([[count]], dtype=np.int64))]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outputs = self._full(request) if self.mode == "full" else self._stream(request)
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except RequestError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
            except Exception as exc:  # ONNX Runtime refusing a tensor: this request fails, the model serves on
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}")))
        return responses

    def finalize(self):
        self.stop.set()
