"""Streaming on the bundled Triton server: tokens/s and per-token latency against concurrent sequences,
and the state one sequence holds against its position.

Each model is written as a Python-backend stream repository (`attnx triton`), served by the bundled
`tritonserver` on 127.0.0.1, and decoded greedily by 1, 8 and 32 sequences at once (one gRPC client
thread each: a prompt, then one request per token). Latency is per decode request as the client sees
it (prefill excluded), after a warm-up sequence per model; tokens/s counts every decode token over
the wall time of the level. The state bytes per sequence are those of the decode graph's state
inputs at each position (batch 1), what the model instance holds per correlation ID: the memory a
replica needs is that times its sequences.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from attnx.errors import AttnxError
from attnx.files import check_output_path, write_text
from attnx.models import ZOO, load_model
from attnx.models.streaming import streamable

DEFAULT_MODELS = ("linear-tiny", "softmax-tiny")
DEFAULT_CONCURRENCY = (1, 8, 32)
DEFAULT_POSITIONS = (128, 512, 2048, 8192)
_ITEMSIZE = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2}


def add_arguments(p) -> None:
    p.add_argument("--models", action="list", choices=list(ZOO), metavar="MODEL",
                   help=f"causal zoo language models that stream (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--concurrency", action="list", type=int, metavar="N",
                   help=f"sequences decoding at once (default {','.join(map(str, DEFAULT_CONCURRENCY))})")
    p.add_argument("--positions", action="list", type=int, metavar="N",
                   help=f"positions for the state bytes (default {','.join(map(str, DEFAULT_POSITIONS))})")
    p.add_argument("--prompt-len", type=int, default=16, help="prompt tokens per sequence (default 16)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens each sequence generates (default 32)")
    p.add_argument("--instances", type=int, default=1, help="model instances on the server (default 1)")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--plot", metavar="PNG", help="plot throughput, p99 latency and state bytes (needs matplotlib)")


def state_bytes(decode: onnx.ModelProto, position: int) -> int:
    """Bytes of the decode graph's state inputs for one sequence with `position` tokens seen."""
    total = 0
    for value in decode.graph.input[1:]:
        dims = [1 if d.dim_param == "batch" else position if d.dim_param == "past" else d.dim_value
                for d in value.type.tensor_type.shape.dim]
        if any(d <= 0 for d in dims):
            raise AttnxError(f"decode input {value.name} has an axis this benchmark cannot size: "
                             f"{[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]}")
        total += math.prod(dims) * _ITEMSIZE[value.type.tensor_type.elem_type]
    return total


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def decode_level(url: str, model: str, concurrency: int, prompt_len: int, new_tokens: int) -> dict:
    from attnx.serve.client import ServerModel

    probe = ServerModel(url, model)
    vocab_size = probe.vocab_size
    probe.close()
    rng = np.random.default_rng(concurrency)
    prompts = [rng.integers(0, vocab_size, prompt_len).tolist() for _ in range(concurrency)]

    def one(i: int) -> list[float]:
        client = ServerModel(url, model, timeout_s=120)
        try:
            return client.generate(prompts[i], new_tokens, sequence_id=10_000 * concurrency + i + 1)[1][1:]
        finally:
            client.close()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        latencies = [ms for per_sequence in pool.map(one, range(concurrency)) for ms in per_sequence]
    wall = time.perf_counter() - start
    return {"model": model, "concurrency": concurrency, "tokens_per_s": len(latencies) / wall,
            "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99)}


def plot(levels: list[dict], states: list[dict], path: str) -> None:
    from attnx.bench.stream import _pyplot
    from attnx.files import atomic_output

    fig, (ax1, ax2, ax3) = _pyplot().subplots(1, 3, figsize=(14, 4))
    for model in dict.fromkeys(r["model"] for r in levels):
        mine = [r for r in levels if r["model"] == model]
        xs = [r["concurrency"] for r in mine]
        ax1.plot(xs, [r["tokens_per_s"] for r in mine], marker="o", label=model)
        ax2.plot(xs, [r["p99_ms"] for r in mine], marker="o", label=model)
    for model in dict.fromkeys(r["model"] for r in states):
        mine = [r for r in states if r["model"] == model]
        ax3.plot([r["position"] for r in mine], [r["state_bytes"] / 1024 for r in mine], marker="o", label=model)
    for ax, xlabel, ylabel in ((ax1, "concurrent sequences", "decode tokens / s"),
                               (ax2, "concurrent sequences", "p99 latency per token (ms)"),
                               (ax3, "position", "state per sequence (KiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax3.set_yscale("log")
    fig.suptitle("Streaming on the bundled Triton server (Python backend, ONNX Runtime CPU)")
    fig.tight_layout()
    with atomic_output(path) as staged:
        fig.savefig(staged, dpi=120)


def run(args) -> int:
    concurrency = list(args.concurrency or DEFAULT_CONCURRENCY)
    positions = list(args.positions or DEFAULT_POSITIONS)
    if min(concurrency + positions) < 1 or min(args.prompt_len, args.new_tokens, args.instances) < 1:
        raise AttnxError(f"every --concurrency and --positions value, --prompt-len, --new-tokens and --instances "
                         f"must be >= 1, got {concurrency}, {positions}, {args.prompt_len}, {args.new_tokens}, "
                         f"{args.instances}")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_path(path, flag)
    if args.plot:
        from attnx.bench.stream import _pyplot

        _pyplot()  # before the benchmark: a missing matplotlib costs nothing
    from attnx.serve.repository import write_repository
    from attnx.serve.server import find_tritonserver, free_port, serve

    find_tritonserver()  # before any export: no server, no benchmark
    models = [load_model(name) for name in dict.fromkeys(args.models or DEFAULT_MODELS)]
    for loaded in models:
        streamable(loaded)
    levels, states = [], []
    with tempfile.TemporaryDirectory(prefix="attnx-bench-serve-") as tmp:
        repo = Path(tmp) / "repo"
        for loaded in models:
            written = write_repository(loaded, repo, backend="python", mode="stream", instances=args.instances,
                                       max_sequences=max(concurrency))
            decode = onnx.load(str(repo / written.name / "1" / "decode.onnx"), load_external_data=False)
            states += [{"model": loaded.name, "position": p, "state_bytes": state_bytes(decode, p)} for p in positions]
        with serve(repo, http_port=free_port(), grpc_port=free_port()) as server:
            for loaded in models:
                decode_level(f"grpc://{server.grpc_url}", loaded.name, 1, args.prompt_len, 8)  # warm-up, not reported
                for level in concurrency:
                    levels.append(decode_level(f"grpc://{server.grpc_url}", loaded.name, level, args.prompt_len,
                                               args.new_tokens))
    print(f"{'model':<16} {'sequences':>9} {'tokens/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in levels:
        print(f"{r['model']:<16} {r['concurrency']:>9} {r['tokens_per_s']:>9.1f} {r['p50_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f}")
    print()
    print(f"{'model':<16} {'position':>8} {'state KiB / sequence':>21}")
    for r in states:
        print(f"{r['model']:<16} {r['position']:>8} {r['state_bytes'] / 1024:>21.1f}")
    if args.json:
        write_text(args.json, json.dumps({"decode": levels, "state": states}, indent=2) + "\n")
    if args.plot:
        plot(levels, states, args.plot)
        print(f"plot written to {args.plot}")
    return 0
