"""attnx command line: zoo | export | check | optimize | convert | generate | bench | plugins | build."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attnx.errors import AttnxError


def _cmd_zoo(args) -> int:
    from attnx.models import ZOO

    if args.json:
        print(json.dumps([{"name": e.name, "description": e.description, "seed": e.seed} for e in ZOO.values()], indent=2))
    else:
        for e in ZOO.values():
            print(f"{e.name:<16} {e.description}")
    return 0


def _export(loaded, out: Path, args, progress, mode: str = "full") -> None:
    import onnx

    from attnx.exporters import default_opset, export
    from attnx.exporters.stream import export_stream

    opset = default_opset(loaded.module) if args.opset is None else args.opset
    with progress.step(f"export {loaded.name} ({mode}) → {out} ({args.dtype}, opset {opset}, traced at batch "
                       f"{args.batch}, seq {args.trace_len})"):
        if mode == "full":
            written = {"full": out}
            export(loaded, out, dtype=args.dtype, opset=opset)
        else:
            written = export_stream(loaded, out, mode, dtype=args.dtype, opset=opset)
        for graph_mode, path in written.items():
            proto = onnx.load(path, load_external_data=False)
            nodes = [n for n in proto.graph.node if n.domain == "attnx"]
            progress.note(f"{graph_mode}: {path}: {len(nodes)} attnx node(s): "
                          f"{', '.join(sorted({n.op_type for n in nodes})) or 'none'}; "
                          f"{len(proto.functions)} local function(s)")


def _model_of(onnx_path: Path, model_ref: str | None):
    """The model to check a file against: --model, else the one the file names."""
    from attnx.check import load_onnx
    from attnx.models import load_model

    if model_ref is None:
        meta = {p.key: p.value for p in load_onnx(onnx_path).metadata_props}
        model_ref = meta.get("attnx.model")
        if model_ref is None:
            raise AttnxError(f"{onnx_path} does not say which model it came from (no attnx.model metadata): "
                             "pass --model")
    return load_model(model_ref)


def _check(onnx_path: Path, loaded, args, progress) -> int:
    from attnx.check import check_parity
    from attnx.plugins.engine import check_trt

    seq_lens = args.seq_len or [1, 37, 300]
    backend = getattr(args, "backend", "ort")
    extra = {"plugin_library": args.plugins} if backend == "trt" else {}
    check = check_trt if backend == "trt" else check_parity
    with progress.step(f"check {onnx_path} against {loaded.name} in float64 at seq {', '.join(map(str, seq_lens))}"):
        report = check(onnx_path, loaded, seq_lens=seq_lens, batch=args.batch,
                       seed=args.seed, progress=progress.note, **extra)
    print(report.to_text())
    if args.json:
        report.write_json(args.json)
        progress.note(f"report written to {args.json}")
    return 0 if report.passed else 1


def _cmd_export(args) -> int:
    from attnx.progress import Progress

    from attnx.models import load_model

    loaded = load_model(args.model, batch=args.batch, seq_len=args.trace_len)
    _export(loaded, Path(args.output), args, Progress(1), mode=args.mode)
    return 0


def _cmd_check(args) -> int:
    from attnx.progress import Progress

    if args.mode == "stream":
        if args.backend != "ort":
            raise AttnxError("check --mode stream runs in ONNX Runtime only; --backend trt checks a whole-model file")
        return _check_stream(args)
    if args.file is None:
        raise AttnxError("check needs an ONNX FILE (or --mode stream, which exports its own graphs)")
    return _check(Path(args.file), _model_of(Path(args.file), args.model), args, Progress(1))


def _check_stream(args) -> int:
    import tempfile

    from attnx.check.stream import check_stream
    from attnx.exporters.stream import stream_paths
    from attnx.models import load_model
    from attnx.progress import Progress

    if args.model is None:
        raise AttnxError("--mode stream needs --model MODEL: the eager model is the reference")
    loaded = load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="attnx-stream-") as tmp:
        progress = Progress(1 if args.file else 2)
        if args.file:
            paths = stream_paths(args.file, "both")
        else:
            args.trace_len = 32
            _export(loaded, Path(tmp) / "model.onnx", args, progress, mode="both")
            paths = stream_paths(Path(tmp) / "model.onnx", "both")
        prompts = args.seq_len or [1, 37]
        with progress.step(f"stream check {args.model}: prefill {', '.join(map(str, prompts))} then "
                           f"{args.new_tokens} decode steps, against the full model in float64"):
            reports = check_stream(loaded, paths["prefill"], paths["decode"], prompt_lens=prompts,
                                   new_tokens=args.new_tokens, batch=args.batch, seed=args.seed,
                                   progress=progress.note)
    for report in reports:
        print(report.to_text())
    passed = all(r.passed for r in reports)
    if args.json:
        Path(args.json).write_text(json.dumps({"passed": passed, "mode": "stream",
                                               "reports": [r.to_json() for r in reports]}, indent=2) + "\n")
    return 0 if passed else 1


def _cmd_generate(args) -> int:
    import tempfile

    from attnx.generate import generate
    from attnx.models import load_model
    from attnx.progress import Progress

    progress = Progress(1)
    with tempfile.TemporaryDirectory(prefix="attnx-generate-") as tmp:
        runtime = "TensorRT" if args.backend == "trt" else "ONNX Runtime"
        with progress.step(f"export {args.model} prefill and decode graphs, then decode {args.new_tokens} tokens "
                           f"greedily in {runtime}"):
            result = generate(load_model(args.model), tmp, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                              backend=args.backend, dtype=args.dtype, opset=args.opset, seed=args.seed,
                              plugin_library=args.plugins)
    print(result.summary())
    return 0


def _optimize(onnx_path: Path, out: Path, progress) -> None:
    """The surgeon's passes on an exported file, written in the ort form."""
    import onnx

    from attnx.surgeon.pipeline import optimize_model

    with progress.step(f"optimize {onnx_path} → {out} (all passes, ort form)"):
        optimized, reports = optimize_model(onnx.load(onnx_path), "ort")
        onnx.save(optimized, out)
        for r in reports:
            changes = [d["change"] for d in r.details if d["rewritten"]]
            progress.note(f"{r.name}: matched {r.matched}, rewritten {r.rewritten}"
                          + (f" ({'; '.join(changes)})" if changes else ""))


def _cmd_convert(args) -> int:
    from attnx.models import load_model
    from attnx.progress import Progress

    from attnx.errors import BackendUnavailableError
    from attnx.plugins.engine import require_tensorrt

    try:
        require_tensorrt()
        no_trt = None
    except BackendUnavailableError as exc:
        no_trt = str(exc)
    progress = Progress(3 if no_trt else 4)
    out_dir = Path(args.output)
    path, sep, factory = args.model.rpartition(":")
    name = f"{Path(path).stem}-{factory}" if sep and path.endswith(".py") else args.model  # file.py:fn → file-fn
    onnx_path = out_dir / f"{name}.onnx"
    optimized_path = out_dir / f"{name}.optimized.onnx"
    loaded = load_model(args.model, batch=args.batch, seq_len=args.trace_len)  # one model for every step
    _export(loaded, onnx_path, args, progress)
    _optimize(onnx_path, optimized_path, progress)
    args.json = args.json or out_dir / f"{name}.parity.json"
    status = _check(optimized_path, loaded, args, progress)
    if no_trt:  # the engine rung of the ladder: said, never skipped silently
        progress.note(f"engine check not run: {no_trt}")
        return status
    args.backend, args.json = "trt", out_dir / f"{name}.trt-parity.json"
    return max(status, _check(optimized_path, loaded, args, progress))


def _add_export_options(p: argparse.ArgumentParser) -> None:
    from attnx.exporters import DEFAULT_OPSET, DTYPES, OPSETS

    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="exported float dtype (default fp32)")
    p.add_argument("--opset", type=int, choices=list(OPSETS), default=None,
                   help=f"ONNX opset (default: {DEFAULT_OPSET}, or 23 for a model with softmax attention, "
                        "which then exports as ONNX Attention)")


def _add_check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=2, help="batch size of the random inputs (default 2)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random inputs (default: fresh, printed)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("zoo", help="list the built-in models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_zoo)

    model_help = "a zoo name (see `attnx zoo`) or path/file.py:factory returning (module, example_inputs)"
    p = sub.add_parser("export", help="export a model to ONNX in attnx form")
    p.add_argument("model", help=model_help)
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--seq-len", dest="trace_len", type=int, default=32,
                   help="sequence length traced (>= 2; the exported sequence axis is dynamic; default 32)")
    p.add_argument("--batch", type=int, default=2,
                   help="batch traced (>= 2; the exported batch axis is dynamic; default 2)")
    p.add_argument("--mode", choices=["full", "prefill", "decode", "both"], default="full",
                   help="the whole model, or the streaming graphs (both: FILE's stem + .prefill/.decode.onnx)")
    _add_export_options(p)
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("check", help="parity of an ONNX file against the eager model in float64")
    p.add_argument("file", nargs="?", default=None,
                   help="ONNX file (--mode stream: the FILE given to `export --mode both`; omitted: exported afresh)")
    p.add_argument("--model", default=None, help=model_help + " (default: the model named in the file)")
    p.add_argument("--mode", choices=["full", "stream"], default="full",
                   help="full: the file vs the eager model; stream: prefill then decode vs the full model")
    p.add_argument("--seq-len", type=int, action="append",
                   help="a length to check (stream: a prompt length); repeat (default 1, 37, 300; stream 1, 37)")
    p.add_argument("--new-tokens", type=int, default=8, help="decode steps after each prompt (stream; default 8)")
    _add_export_options(p)  # stream without FILE exports its graphs first
    p.add_argument("--backend", choices=["ort", "trt"], default="ort", help="runtime to check (default ort)")
    p.add_argument("--plugins", metavar="LIB", default=None,
                   help="plugin library for --backend trt (default: $ATTNX_PLUGIN_LIB, else the built one)")
    _add_check_options(p)
    p.set_defaults(run=_cmd_check)

    p = sub.add_parser("convert", help="export, optimize, check in ONNX Runtime, then as a TensorRT engine where TensorRT is installed")
    p.add_argument("model", nargs="?", default="linear-tiny", help=model_help + " (default linear-tiny)")
    p.add_argument("-o", "--output", default="attnx-out", help="output folder (default attnx-out)")
    p.add_argument("--seq-len", type=int, action="append", help="a length to check; repeat (default 1, 37, 300)")
    _add_export_options(p)
    _add_check_options(p)
    p.add_argument("--plugins", metavar="LIB", default=None,
                   help="plugin library for the engine check (default: $ATTNX_PLUGIN_LIB, else the built one)")
    p.set_defaults(run=_cmd_convert, trace_len=32)

    p = sub.add_parser("generate", help="greedy decoding with the prefill and decode graphs in ONNX Runtime")
    p.add_argument("model", nargs="?", default="linear-tiny", help="a causal zoo language model (default linear-tiny)")
    p.add_argument("--prompt-len", type=int, default=16, help="random prompt length (default 16)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    p.add_argument("--backend", choices=["ort", "trt"], default="ort",
                   help="ort: ONNX Runtime CPU (default); trt: TensorRT engines with the plugin library")
    p.add_argument("--plugins", metavar="LIB", default=None,
                   help="plugin library for --backend trt (default: $ATTNX_PLUGIN_LIB, else the built one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompt (default 0)")
    _add_export_options(p)
    p.set_defaults(run=_cmd_generate)

    from attnx.surgeon.cli import add_parser as add_optimize_parser

    add_optimize_parser(sub)

    from attnx.bench import add_parser as add_bench_parser

    add_bench_parser(sub)

    from attnx.plugins.cli import add_parsers as add_plugin_parsers

    add_plugin_parsers(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except AttnxError as exc:
        print(f"attnx {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
