"""Reassociation benchmark: ONNX Runtime CPU latency of (QKᵀ)V, of what `reassociate` makes of
it, and of a hand-written Q(KᵀV), for linear attention with elu+1 features and a row-sum
normaliser at B = 1, H = 1 (the quadratic graph holds an N×N float32 matrix: 1 GiB at 16k).
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

EPS = 1e-6
DEFAULT_LENGTHS = (1024, 4096, 16384)


def _graphs(d: int):
    """(quadratic, hand-written linear) ModelProtos: q, k, v [1, 1, N, d] → y [1, 1, N, d]."""
    from onnx import TensorProto, helper, numpy_helper

    def model(nodes, name):
        io = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 1, "N", d]) for x in "qkv"]
        out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "N", d])]
        inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                 numpy_helper.from_array(np.array(EPS, np.float32), "eps"),
                 numpy_helper.from_array(np.array([-1], np.int64), "last")]
        return helper.make_model(helper.make_graph(nodes, name, io, out, inits),
                                 opset_imports=[helper.make_opsetid("", 18)])

    node = helper.make_node
    features = [node("Elu", ["q"], ["eq"]), node("Add", ["eq", "one"], ["fq"]),
                node("Elu", ["k"], ["ek"]), node("Add", ["ek", "one"], ["fk"]),
                node("Transpose", ["fk"], ["fkt"], perm=[0, 1, 3, 2])]
    quadratic = model(features + [
        node("MatMul", ["fq", "fkt"], ["a"]),                          # [1, 1, N, N]
        node("MatMul", ["a", "v"], ["av"]),
        node("ReduceSum", ["a", "last"], ["rows"], keepdims=1),
        node("Add", ["rows", "eps"], ["den"]),
        node("Div", ["av", "den"], ["y"])], "quadratic")
    linear = model(features + [
        node("MatMul", ["fkt", "v"], ["kv"]),                          # [1, 1, d, d]
        node("MatMul", ["fq", "kv"], ["qkv"]),
        node("ReduceSum", ["fkt", "last"], ["ksum"], keepdims=1),     # [1, 1, d, 1]
        node("MatMul", ["fq", "ksum"], ["qz"]),
        node("Add", ["qz", "eps"], ["den"]),
        node("Div", ["qkv", "den"], ["y"])], "hand_written")
    return quadratic, linear


def _median_ms(session, feeds, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):  # allocations, kernel selection, the thread pool's start
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def add_arguments(parser) -> None:
    parser.add_argument("--lengths", action="list", type=int, metavar="N",
                        help="sequence lengths N; repeat or comma-separate "
                             f"(default {','.join(map(str, DEFAULT_LENGTHS))})")
    parser.add_argument("--dim", type=int, default=64, help="head size d = e (default 64)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per graph and length; median (default 20)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads (default 0: its default, one per core); 1 gives the "
                             "steadiest ratios on a small machine")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the rows as JSON")


def run(args) -> int:
    import onnxruntime as ort

    from attnx.errors import AttnxError
    from attnx.files import check_output_path, write_text
    from attnx.surgeon import optimize_model
    from attnx.surgeon.shapes import matmul_flops

    if args.json:
        check_output_path(args.json, "--json")
    lengths = list(args.lengths or DEFAULT_LENGTHS)
    if args.repeats < 1 or args.dim < 1 or any(n < 1 for n in lengths):
        raise AttnxError(f"--repeats, --dim and every length must be >= 1, got {args.repeats}, {args.dim}, {lengths}")
    if args.threads < 0:
        raise AttnxError(f"--threads must be >= 0 (0: ONNX Runtime's default), got {args.threads}")
    quadratic, hand = _graphs(args.dim)
    reassociated, reports = optimize_model(quadratic, "ort", ["reassociate"])
    if reports[0].rewritten != 1:
        raise AttnxError(f"reassociate left the benchmark graph alone: {reports[0].details}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
                for name, m in (("quadratic", quadratic), ("reassociated", reassociated), ("hand", hand))}
    rng = np.random.default_rng(0)
    rows = []
    threads = "default threads" if args.threads == 0 else f"{args.threads} thread{'s' * (args.threads > 1)}"
    print(f"linear attention, elu+1, row-sum normaliser; B = 1, H = 1, d = {args.dim}; ONNX Runtime CPU "
          f"({ort.get_device()}, {threads}); median of {args.repeats} runs after 3 warm-ups")
    print(f"{'N':>6} {'FLOPs ratio':>11} {'quadratic ms':>13} {'reassoc. ms':>12} {'hand ms':>8} "
          f"{'speed-up':>9} {'vs hand':>8}")
    for n in lengths:
        feeds = {x: rng.standard_normal((1, 1, n, args.dim), dtype=np.float32) for x in "qkv"}
        ms = {name: _median_ms(s, feeds, args.repeats) for name, s in sessions.items()}
        flops = matmul_flops(quadratic, n)[0] / matmul_flops(reassociated, n)[0]
        row = {"n": n, "d": args.dim, "threads": args.threads, "flops_ratio": flops, **{f"{k}_ms": v for k, v in ms.items()},
               "speedup": ms["quadratic"] / ms["reassociated"], "vs_hand": ms["reassociated"] / ms["hand"]}
        rows.append(row)
        print(f"{n:>6} {flops:>10.1f}x {ms['quadratic']:>13.2f} {ms['reassociated']:>12.3f} {ms['hand']:>8.3f} "
              f"{row['speedup']:>8.1f}x {row['vs_hand']:>7.2f}x")
    if args.json:
        write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0
