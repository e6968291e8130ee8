"""`attnx check [FILE]`: parity of an ONNX file (or a prefill/decode pair) against the eager model
in float64, in ONNX Runtime or as a TensorRT engine."""

from __future__ import annotations

from pathlib import Path

from attnx.cli.export import export_step
from attnx.cli.options import (MODEL_HELP, TRACE_BATCH, TRACE_LEN, add_check_options, add_export_options,
                               add_plugin_library, add_seq_lens, at_least, prompt_lens, seq_lens)
from attnx.errors import AttnxError, InputError


def add_parser(subparsers) -> None:
    from attnx.check import DEFAULT_NEW_TOKENS

    p = subparsers.add_parser("check", help="parity of an ONNX file against the eager model in float64")
    p.add_argument("file", nargs="?", default=None,
                   help="ONNX file (--mode stream: the FILE given to `export --mode both`; omitted: exported afresh)")
    p.add_argument("--model", default=None,
                   help=MODEL_HELP + " (default: the zoo model the file records; a file never makes attnx run "
                        "Python: a factory runs only when given here)")
    p.add_argument("--force", action="store_true",
                   help="check against --model even when the file records another model name (the file's "
                        "fingerprint of the architecture and weights must still match)")
    p.add_argument("--mode", choices=["full", "stream"], default="full",
                   help="full: the file vs the eager model; stream: prefill then decode vs the full model")
    add_seq_lens(p, stream=True)
    p.add_argument("--new-tokens", type=at_least(1), default=DEFAULT_NEW_TOKENS,
                   help=f"decode steps after each prompt (stream; default {DEFAULT_NEW_TOKENS})")
    add_export_options(p)  # stream without FILE exports its graphs first
    p.add_argument("--backend", choices=["ort", "trt"], default="ort", help="runtime to check (default ort)")
    add_plugin_library(p, use="for --backend trt")
    add_check_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from attnx.files import check_output_path
    from attnx.progress import Progress

    if args.json:  # before any work: a report that cannot be written must not follow a verdict
        check_output_path(args.json, "--json")
    if args.mode == "stream":
        if args.backend != "ort":
            raise AttnxError("check --mode stream runs in ONNX Runtime only; --backend trt checks a whole-model file")
        return _check_stream(args)
    if args.file is None:
        raise AttnxError("check needs an ONNX FILE (or --mode stream, which exports its own graphs)")
    path, progress = Path(args.file), Progress(1)
    return check_step(path, _model_of([path], args.model, args.force, progress), progress, backend=args.backend,
                      seq_lens=seq_lens(args), batch=args.batch, seed=args.seed, plugins=args.plugins,
                      json_path=args.json)


def _model_of(onnx_paths: list[Path], model_ref: str | None, force: bool, progress, **sizes):
    """The model to check the files against (`attnx.check.identity.choose_model`: --model, else the zoo
    name they record), said on `progress` with where it came from and what the files' fingerprints
    cannot verify. Python is imported only for a factory given with --model."""
    from attnx.check import load_onnx
    from attnx.check.identity import choose_model, fingerprint_note, recorded_model
    from attnx.models import load_model

    models = [load_onnx(path) for path in onnx_paths]
    records = [recorded_model(model) for model in models]
    if len(set(records)) > 1:
        raise InputError(f"{' and '.join(map(str, onnx_paths))} record different models "
                         f"({' and '.join(map(repr, records))}): expected the graphs of one model")
    choice = choose_model(onnx_paths[0], records[0], model_ref, force=force)
    progress.note(choice.describe())
    for model, path in zip(models, onnx_paths):
        note = fingerprint_note(model, path)
        if note:
            progress.note(note)
    return load_model(choice.ref, **sizes)


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
    from attnx.check.identity import FROM_COMMAND_LINE
    from attnx.check.report import strict_json
    from attnx.exporters.stream import stream_paths
    from attnx.files import write_text
    from attnx.models import load_model
    from attnx.progress import Progress

    progress = Progress(1 if args.file else 2)
    if args.file:
        paths = stream_paths(args.file, "both")
        loaded = _model_of([paths["prefill"], paths["decode"]], args.model, args.force, progress,
                           batch=TRACE_BATCH, seq_len=TRACE_LEN)
    elif args.model is None:
        raise AttnxError("--mode stream without FILE needs --model MODEL: it exports that model's graphs")
    else:
        progress.note(f"checking against model {args.model} ({FROM_COMMAND_LINE})")
        loaded = load_model(args.model, batch=TRACE_BATCH, seq_len=TRACE_LEN)
    with tempfile.TemporaryDirectory(prefix="attnx-stream-") as tmp:
        if not args.file:
            export_step(loaded, Path(tmp) / "model.onnx", progress, dtype=args.dtype, opset=args.opset,
                        batch=TRACE_BATCH, trace_len=TRACE_LEN, mode="both")
            paths = stream_paths(Path(tmp) / "model.onnx", "both")
        prompts = prompt_lens(args)
        with progress.step(f"stream check {loaded.name}: prefill {', '.join(map(str, prompts))} then "
                           f"{args.new_tokens} decode steps, against the full model in float64"):
            reports = check_stream(loaded, paths["prefill"], paths["decode"], prompt_lens=prompts,
                                   new_tokens=args.new_tokens, batch=args.batch, seed=args.seed,
                                   progress=progress.note)
    for report in reports:
        print(report.to_text())
    passed = all(r.passed for r in reports)
    if args.json:
        write_text(args.json, strict_json({"passed": passed, "mode": "stream",
                                           "reports": [r.to_json() for r in reports]}))
    return 0 if passed else 1
