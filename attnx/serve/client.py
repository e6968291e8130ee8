"""Talk to a model served by `attnx triton serve` through tritonclient (HTTP or gRPC).

A URL `grpc://HOST:PORT` uses gRPC; `http://HOST:PORT` or a bare `HOST:PORT` uses HTTP. A stream model
(attnx.serve.triton_model) takes one sequence per request: the first with START and the prompt,
then one token per request, the last with END; the server routes them by the sequence ID.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from attnx.errors import AttnxError, InputError


class ServerRequestError(AttnxError):
    """The server answered a request with an error (its message is kept)."""


@dataclasses.dataclass(frozen=True)
class Reply:
    next_token: int
    logits: np.ndarray | None  # [1, n, V] when asked for
    sequences_held: int | None


def _parse(url: str) -> tuple[str, str]:
    for scheme in ("grpc", "http"):
        if url.startswith(f"{scheme}://"):
            return scheme, url[len(scheme) + 3:].rstrip("/")
    if "://" in url:
        raise InputError(f"expected a server URL grpc://HOST:PORT, http://HOST:PORT or HOST:PORT, found {url!r}")
    return "http", url.rstrip("/")


class ServerModel:
    """One model on a running Triton server; `infer` sends one request, `generate` a whole sequence."""

    def __init__(self, url: str, model: str, *, timeout_s: float = 60.0):
        self.protocol, address = _parse(url)
        if self.protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        from tritonclient.utils import InferenceServerException

        self._module, self._server_error = client_module, InferenceServerException
        self.model, self.timeout_s = model, timeout_s
        kwargs = {} if self.protocol == "grpc" else {"connection_timeout": timeout_s, "network_timeout": timeout_s}
        try:
            self.client = client_module.InferenceServerClient(address, **kwargs)
            ready = self.client.is_model_ready(model)
        except (InferenceServerException, OSError) as exc:
            raise ServerRequestError(f"expected a Triton server at {url}, found none answering: {exc}") from exc
        if not ready:
            raise ServerRequestError(f"expected model {model!r} ready on {url}, found it not ready or not there")
        config = self.client.get_model_config(model)
        config = config.config if self.protocol == "grpc" else config
        self.config = config
        self.streaming = bool(self._field(config, "sequence_batching"))
        self.vocab_size = int(list(self._outputs(config)[0]["dims"])[-1])

    def _field(self, config, key):
        if self.protocol == "grpc":
            return config.HasField(key) and getattr(config, key)
        return config.get(key)

    def _outputs(self, config) -> list[dict]:
        if self.protocol == "grpc":
            return [{"name": o.name, "dims": list(o.dims)} for o in config.output]
        return [{"name": o["name"], "dims": o["dims"]} for o in config["output"]]

    def infer(self, ids: np.ndarray, *, sequence_id: int = 0, start: bool = False, end: bool = False,
              logits: bool = False) -> Reply:
        """One request with `ids` [1, n] (int64); ServerRequestError carries the server's message."""
        tensor = self._module.InferInput("input_ids", list(ids.shape), "INT64")
        tensor.set_data_from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
        names = ["next_token"] + (["sequences_held"] if self.streaming else []) + (["logits"] if logits else [])
        outputs = [self._module.InferRequestedOutput(n) for n in names]
        kwargs = {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end} if self.streaming else {}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        try:
            result = self.client.infer(self.model, [tensor], outputs=outputs, **kwargs)
        except self._server_error as exc:
            raise ServerRequestError(f"{self.model}: {exc.message() if hasattr(exc, 'message') else exc}") from exc
        held = result.as_numpy("sequences_held") if self.streaming else None
        return Reply(int(result.as_numpy("next_token").reshape(-1)[-1]),
                     result.as_numpy("logits") if logits else None,
                     None if held is None else int(held.reshape(-1)[0]))

    def generate(self, prompt: list[int], new_tokens: int, *, sequence_id: int) -> tuple[list[int], list[float]]:
        """Greedy tokens after `prompt` and the milliseconds each request took (prefill first)."""
        if not self.streaming:
            raise InputError(f"model {self.model!r} has no sequence batcher: expected a --mode stream repository")
        tokens, latencies = [], []
        ids = np.array([prompt], dtype=np.int64)
        for step in range(new_tokens):
            begin = time.perf_counter()
            reply = self.infer(ids, sequence_id=sequence_id, start=step == 0, end=step == new_tokens - 1)
            latencies.append((time.perf_counter() - begin) * 1e3)
            tokens.append(reply.next_token)
            ids = np.array([[reply.next_token]], dtype=np.int64)
        return tokens, latencies

    def close(self) -> None:
        self.client.close()
