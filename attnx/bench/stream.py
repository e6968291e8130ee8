"""Decode latency per token and state size against position: flat for recurrent states, growing for caches.

Each model's decode graph runs in ONNX Runtime (CPU) on a state as it stands after `position`
tokens (random values of the right shape: the cost of a step does not depend on them), batch 1.
The baseline is the first position; every row prints its ratio to it.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from attnx.errors import AttnxError, BackendUnavailableError
from attnx.exporters.stream import export_stream
from attnx.files import atomic_output, check_output_path, write_text
from attnx.models import ZOO, LoadedModel, load_model
from attnx.models.streaming import streamable

DEFAULT_MODELS = ("linear-tiny", "performer-tiny", "gau-tiny", "softmax-tiny")
DEFAULT_POSITIONS = (128, 512, 2048, 8192)
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def add_arguments(p) -> None:
    p.add_argument("--models", action="list", choices=list(ZOO), metavar="MODEL",
                   help=f"causal zoo language models that stream; repeat or comma-separate (default "
                        f"{','.join(DEFAULT_MODELS)})")
    p.add_argument("--positions", action="list", type=int, metavar="N",
                   help=f"tokens already seen, each >= 1; repeat or comma-separate (default "
                        f"{','.join(map(str, DEFAULT_POSITIONS))})")
    p.add_argument("--repeats", type=int, default=50, help="timed decode steps per position (median reported)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1: steadier)")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--plot", metavar="PNG", help="plot latency and state bytes against position (needs matplotlib)")


def _feed(session: ort.InferenceSession, position: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for inp in session.get_inputs():
        shape = [1 if d == "batch" else position if d == "past" else d for d in inp.shape]
        if any(not isinstance(d, int) for d in shape):
            raise AttnxError(f"decode input {inp.name} has an axis this benchmark cannot size: {inp.shape}")
        dtype = _NUMPY[inp.type]
        feed[inp.name] = np.zeros(shape, dtype) if dtype is np.int64 else rng.standard_normal(shape).astype(dtype)
    return feed


def measure(loaded: LoadedModel, positions, repeats: int, threads: int, work_dir: Path) -> list[dict]:
    model = loaded.name
    path = export_stream(loaded, work_dir / f"{model}.onnx", "decode")["decode"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng, rows = np.random.default_rng(0), []
    for position in positions:
        feed = _feed(session, position, rng)
        for _ in range(5):
            session.run(None, feed)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        state = sum(v.nbytes for name, v in feed.items() if name != "input_ids")
        rows.append({"model": model, "position": position, "ms_per_token": statistics.median(times),
                     "state_bytes": state})
    for row in rows:
        row["latency_ratio"] = row["ms_per_token"] / rows[0]["ms_per_token"]
        row["state_ratio"] = row["state_bytes"] / rows[0]["state_bytes"]
    return rows


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or BackendUnavailableError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BackendUnavailableError(f"--plot needs matplotlib, which does not import here ({exc}): "
                                      "pip install -e '.[bench]', or leave --plot out") from None
    return plt


def plot(rows: list[dict], path: str) -> None:
    fig, (ax1, ax2) = _pyplot().subplots(1, 2, figsize=(10, 4))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        xs = [r["position"] for r in mine]
        ax1.plot(xs, [r["ms_per_token"] for r in mine], marker="o", label=model)
        ax2.plot(xs, [r["state_bytes"] / 1024 for r in mine], marker="o", label=model)
    for ax, label in ((ax1, "decode latency (ms / token)"), (ax2, "state (KiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("position (tokens already seen)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend()
    fig.suptitle("Decode step vs position, batch 1, ONNX Runtime CPU")
    fig.tight_layout()
    with atomic_output(path) as staged:
        fig.savefig(staged, dpi=120)  # the staged name keeps the suffix savefig reads


def run(args) -> int:
    positions = list(args.positions or DEFAULT_POSITIONS)
    if min(positions) < 1 or args.repeats < 1 or args.threads < 1:
        raise AttnxError(f"every --positions value, --repeats and --threads must be >= 1, got positions "
                         f"{positions}, repeats {args.repeats}, threads {args.threads}")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_path(path, flag)
    if args.plot:
        _pyplot()  # before the benchmark, not after it: a missing matplotlib costs nothing
    models = [load_model(name) for name in dict.fromkeys(args.models or DEFAULT_MODELS)]
    for loaded in models:  # every model named must stream (ModelNotFoundError says why not), before any run
        streamable(loaded)
    rows = []
    with tempfile.TemporaryDirectory(prefix="attnx-bench-stream-") as tmp:
        for loaded in models:
            rows += measure(loaded, positions, args.repeats, args.threads, Path(tmp))
    print(f"{'model':<16} {'position':>8} {'ms/token':>9} {'× first':>8} {'state KiB':>10} {'× first':>8}")
    for r in rows:
        print(f"{r['model']:<16} {r['position']:>8} {r['ms_per_token']:>9.3f} {r['latency_ratio']:>8.2f} "
              f"{r['state_bytes'] / 1024:>10.1f} {r['state_ratio']:>8.1f}")
    if args.json:
        write_text(args.json, json.dumps(rows, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 0
