"""`attnx check [FILE]`: parity of an ONNX file (or a prefill/decode pair) against the eager model
in float64, in ONNX Runtime or as a TensorRT engine."""

from __future__ import annotations

import json
from pathlib import Path

from attnx.cli.export import export_step
from attnx.cli.options import (MODEL_HELP, TRACE_BATCH, TRACE_LEN, add_check_options, add_export_options,
                               add_plugin_library, add_seq_lens, prompt_lens, seq_lens)
from attnx.errors import AttnxError


def add_parser(subparsers) -> None:
    from attnx.check import DEFAULT_NEW_TOKENS

    p = subparsers.add_parser("check", help="parity of an ONNX file against the eager model in float64")
    p.add_argument("file", nargs="?", default=None,
                   help="ONNX file (--mode stream: the FILE given to `export --mode both`; omitted: exported afresh)")
    p.add_argument("--model", default=None, help=MODEL_HELP + " (default: the model named in the file)")
    p.add_argument("--mode", choices=["full", "stream"], default="full",
                   help="full: the file vs the eager model; stream: prefill then decode vs the full model")
    add_seq_lens(p, stream=True)
    p.add_argument("--new-tokens", type=int, default=DEFAULT_NEW_TOKENS,
                   help=f"decode steps after each prompt (stream; default {DEFAULT_NEW_TOKENS})")
    add_export_options(p)  # stream without FILE exports its graphs first
    p.add_argument("--backend", choices=["ort", "trt"], default="ort", help="runtime to check (default ort)")
    add_plugin_library(p, use="for --backend trt")
    add_check_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from attnx.progress import Progress

    if args.mode == "stream":
        if args.backend != "ort":
            raise AttnxError("check --mode stream runs in ONNX Runtime only; --backend trt checks a whole-model file")
        return _check_stream(args)
    if args.file is None:
        raise AttnxError("check needs an ONNX FILE (or --mode stream, which exports its own graphs)")
    path = Path(args.file)
    return check_step(path, _model_of(path, args.model), Progress(1), backend=args.backend, seq_lens=seq_lens(args),
                      batch=args.batch, seed=args.seed, plugins=args.plugins, json_path=args.json)


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


def check_step(onnx_path: Path, loaded, progress, *, backend: str, seq_lens: list[int], batch: int,
               seed: int | None, plugins: str | None, json_path: str | Path | None) -> int:
    """Check `onnx_path` against `loaded` on `backend` (ort, trt) as one step of `progress`, print the
    report (and write it to `json_path`); the exit code: 0 passed, 1 failed."""
    from attnx.check import check_parity, check_trt

    extra = {"plugin_library": plugins} if backend == "trt" else {}
    check = check_trt if backend == "trt" else check_parity
    with progress.step(f"check {onnx_path} against {loaded.name} in float64 at seq {', '.join(map(str, seq_lens))}"):
        report = check(onnx_path, loaded, seq_lens=seq_lens, batch=batch, seed=seed, progress=progress.note, **extra)
    print(report.to_text())
    if json_path:
        report.write_json(json_path)
        progress.note(f"report written to {json_path}")
    return 0 if report.passed else 1


def _check_stream(args) -> int:
    import tempfile

    from attnx.check import check_stream
    from attnx.exporters.stream import stream_paths
    from attnx.models import load_model
    from attnx.progress import Progress

    if args.model is None:
        raise AttnxError("--mode stream needs --model MODEL: the eager model is the reference")
    loaded = load_model(args.model, batch=TRACE_BATCH, seq_len=TRACE_LEN)
    with tempfile.TemporaryDirectory(prefix="attnx-stream-") as tmp:
        progress = Progress(1 if args.file else 2)
        if args.file:
            paths = stream_paths(args.file, "both")
        else:
            export_step(loaded, Path(tmp) / "model.onnx", progress, dtype=args.dtype, opset=args.opset,
                        batch=TRACE_BATCH, trace_len=TRACE_LEN, mode="both")
            paths = stream_paths(Path(tmp) / "model.onnx", "both")
        prompts = prompt_lens(args)
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
