"""`attnx check [FILE]`: parity of an ONNX file (or a prefill/decode pair) against the eager model
in float64, in ONNX Runtime or as a TensorRT engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnx.cli.export import export_step
from attnx.cli.options import (MODEL_HELP, ListOption, add_check_options, add_export_options, add_plugin_library,
                               add_providers, add_seq_lens, at_least, prompt_lens, seq_lens)
from attnx.errors import AttnxError, InputError

ERROR_STATS = ("elemwise", "max", "mean", "median")  # attnx.check.compare.ERROR_STATS, without importing it
# the flags that speak Polygraphy's terms; --mode stream takes none of them
POLYGRAPHY_FLAGS = ("save_inputs", "load_inputs", "save_outputs", "load_outputs", "reference_runner", "atol", "rtol",
                    "check_error_stat", "input_shapes")


def per_output(value_type, what: str):
    """An argparse type: `VALUE` for every output, or Polygraphy's `NAME:VALUE` for one → (name or "", value)."""
    def parse(text: str):
        name, sep, value = text.rpartition(":")
        try:
            parsed = value_type(value)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"expected {what} or OUTPUT:{what}, found {text!r}") from None
        if sep and not name:
            raise argparse.ArgumentTypeError(f"expected OUTPUT:{what} with an output name, found {text!r}")
        return name, parsed

    parse.__name__ = what
    return parse


def tolerance(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(text)
    return value


def error_stat(text: str) -> str:
    if text not in ERROR_STATS:
        raise ValueError(text)
    return text


def input_shape(text: str):
    """`NAME:[D0,D1,...]` (Polygraphy's --input-shapes style) → (name, [dims])."""
    name, sep, dims = text.rpartition(":")
    try:
        if not (sep and name and dims.startswith("[") and dims.endswith("]")):
            raise ValueError
        shape = [int(d) for d in dims[1:-1].split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME:[D0,D1,...] (e.g. input_ids:[2,37]), found {text!r}") from None
    if any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"expected dims >= 1 in {text!r}")
    return name, shape


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
    add_plugin_library(p, use="for --backend trt or --providers tensorrt")
    add_providers(p)
    add_check_options(p)
    g = p.add_argument_group("Polygraphy's terms", "inputs, golden outputs and comparison as `polygraphy run` takes them")
    g.add_argument("--save-inputs", metavar="PATH", default=None,
                   help="write the feeds (Polygraphy's JSON list of feed dicts, as `polygraphy run --save-inputs`)")
    g.add_argument("--load-inputs", metavar="PATH", default=None,
                   help="feed these inputs (Polygraphy's list of feed dicts) instead of drawing them")
    g.add_argument("--save-outputs", metavar="PATH", default=None,
                   help="write every runner's outputs as Polygraphy RunResults JSON (the eager float64 model's: golden "
                        "outputs), with what they came from under \"attnx\"")
    g.add_argument("--load-outputs", metavar="PATH", default=None,
                   help="hold the file to these golden outputs (RunResults JSON) instead of the eager model, with no "
                        "model code: needs --load-inputs, the inputs they were made from")
    g.add_argument("--reference-runner", metavar="NAME", default=None,
                   help="the runner of --load-outputs that is the reference (default eager-float64 when there, else "
                        "the file's only runner)")
    g.add_argument("--atol", type=per_output(tolerance, "ATOL"), action=ListOption, metavar="[OUTPUT:]ATOL",
                   help="absolute tolerance, overall or per output (logits:1e-3); repeat or comma-separate (default: "
                        "the file's dtype's, attnx.check.tolerances)")
    g.add_argument("--rtol", type=per_output(tolerance, "RTOL"), action=ListOption, metavar="[OUTPUT:]RTOL",
                   help="relative tolerance, overall or per output; repeat or comma-separate (default: the dtype's)")
    g.add_argument("--check-error-stat", type=per_output(error_stat, "STAT"), action=ListOption,
                   metavar="[OUTPUT:]{" + ",".join(ERROR_STATS) + "}",
                   help="error statistic held to atol/rtol, overall or per output (default elemwise: every element)")
    g.add_argument("--input-shapes", type=input_shape, action=ListOption, metavar="NAME:[DIMS]",
                   help="draw these inputs at these shapes (input_ids:[2,37]) instead of --batch and --seq-len; "
                        "repeat or comma-separate")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="count", default=0,
                      help="Polygraphy's details too (tolerances, error metrics per output); -vv more")
    loud.add_argument("-q", "--quiet", action="store_true", help="only the verdict lines, warnings and errors")
    p.set_defaults(run=run)


def _verbosity(args) -> int:
    return -1 if args.quiet else args.verbose


def _options(args):
    """attnx.check.parity.ParityOptions from the Polygraphy-style flags (golden outputs loaded here)."""
    from attnx.check.golden import load_outputs
    from attnx.check.parity import ParityOptions

    return ParityOptions(input_shapes=dict(args.input_shapes or []) or None, inputs_path=args.load_inputs,
                         golden=load_outputs(args.load_outputs) if args.load_outputs else None,
                         reference_runner=args.reference_runner, atol=dict(args.atol or []),
                         rtol=dict(args.rtol or []), stat=dict(args.check_error_stat or []), force=args.force,
                         verbosity=_verbosity(args))


def _refuse_combinations(args) -> None:
    """Flags that cannot go together: usage errors (exit 2) before any work; flags without effect: a warning."""
    from attnx.check import DEFAULT_BATCH, DEFAULT_SEED
    from attnx.progress import warn

    if args.mode == "stream":
        given = [f"--{f.replace('_', '-')}" for f in POLYGRAPHY_FLAGS if getattr(args, f)]
        if given:
            raise AttnxError(f"check --mode stream does not take {', '.join(given)}: it checks prefill then decode "
                             "against the full model at the dtype's tolerances")
    if args.backend == "trt" and args.providers:
        raise AttnxError("--providers chooses ONNX Runtime's execution providers (--backend ort); --backend trt "
                         "builds a TensorRT engine")
    if args.plugins is not None and args.backend != "trt" and "tensorrt" not in (args.providers or []):
        warn("attnx check", f"--plugins {args.plugins} is ignored: only --backend trt or --providers with tensorrt "
                            "load a plugin library")
    if args.load_outputs and not args.load_inputs:
        raise AttnxError("--load-outputs needs --load-inputs: golden outputs hold only for the inputs that produced "
                         "them (save both with --save-inputs and --save-outputs)")
    if args.load_outputs and args.model:
        raise AttnxError("--load-outputs is the reference and runs no model: drop --model, or drop --load-outputs "
                         "to check against the eager model")
    if args.reference_runner and not args.load_outputs:
        raise AttnxError("--reference-runner chooses a runner of --load-outputs: pass --load-outputs")
    if args.load_inputs and (args.seq_len or args.input_shapes):
        raise AttnxError(f"--load-inputs gives the inputs; {'--seq-len' if args.seq_len else '--input-shapes'} "
                         "sizes drawn ones: pass one")
    if args.load_inputs and (args.batch != DEFAULT_BATCH or args.seed != DEFAULT_SEED):
        warn("attnx check", "--batch and --seed are ignored: --load-inputs gives the inputs")
    outputs = [p for p in (args.json, args.save_inputs, args.save_outputs) if p]
    if len({Path(p).resolve() for p in outputs}) != len(outputs):
        raise AttnxError(f"--json, --save-inputs and --save-outputs must be different files, found {', '.join(outputs)}")


def run(args) -> int:
    from attnx.files import check_output_path
    from attnx.progress import Progress

    _refuse_combinations(args)
    # before any work: a report or file that cannot be written must not follow a verdict
    for flag in ("json", "save_inputs", "save_outputs"):
        if getattr(args, flag):
            check_output_path(getattr(args, flag), f"--{flag.replace('_', '-')}")
    if args.mode == "stream":
        if args.backend != "ort":
            raise AttnxError("check --mode stream runs in ONNX Runtime only; --backend trt checks a whole-model file")
        return _check_stream(args)
    if args.file is None:
        raise AttnxError("check needs an ONNX FILE (or --mode stream, which exports its own graphs)")
    path, progress = Path(args.file), Progress(1, verbosity=_verbosity(args))
    options = _options(args)
    if options.golden is not None:
        progress.note(f"checking against the golden outputs {args.load_outputs} on the inputs {args.load_inputs} "
                      "(no model is loaded)")
        loaded = None
    else:
        loaded = _model_of([path], args.model, args.force, progress)
    return check_step(path, loaded, progress, backend=args.backend, seq_lens=seq_lens(args), batch=args.batch,
                      seed=args.seed, plugins=args.plugins, json_path=args.json, providers=args.providers,
                      options=options, save_inputs=args.save_inputs, save_outputs=args.save_outputs)


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
               seed: int | None, plugins: str | None, json_path: str | Path | None, providers=None, options=None,
               save_inputs: str | Path | None = None, save_outputs: str | Path | None = None) -> int:
    """Check `onnx_path` against `loaded` (None: the golden outputs of `options`) on `backend` (ort, trt)
    as one step of `progress`, print the report (only its verdict when quiet), write it to `json_path`
    and the feeds and RunResults to `save_inputs` / `save_outputs`; the exit code: 0 passed, 1 failed."""
    from attnx.check import check_parity, check_trt
    from attnx.check.golden import save_inputs as write_inputs
    from attnx.check.golden import save_outputs as write_outputs

    extra = {"plugin_library": plugins}
    if backend != "trt":
        extra["providers"] = providers
    check = check_trt if backend == "trt" else check_parity
    if loaded is not None:
        what = f"{loaded.name} in float64 at seq {', '.join(map(str, seq_lens))}"
        if options is not None and options.inputs_path:
            what = f"{loaded.name} in float64 on the inputs of {options.inputs_path}"
    else:
        what = f"the golden outputs of {options.golden.path}"
    with progress.step(f"check {onnx_path} against {what}"):
        report = check(onnx_path, loaded, seq_lens=seq_lens, batch=batch, seed=seed, options=options,
                       progress=progress.note, **extra)
    print(report.verdict() if progress.verbosity < 0 else report.to_text())
    if save_inputs:
        write_inputs(report.feeds, save_inputs)
        progress.note(f"inputs written to {save_inputs}")
    if save_outputs:
        write_outputs(report.run_results, save_outputs, report.record)
        progress.note(f"outputs of {', '.join(report.run_results.keys())} written to {save_outputs}")
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

    progress = Progress(1 if args.file else 2, verbosity=_verbosity(args))
    if args.file:
        paths = stream_paths(args.file, "both")
        loaded = _model_of([paths["prefill"], paths["decode"]], args.model, args.force, progress)
    elif args.model is None:
        raise AttnxError("--mode stream without FILE needs --model MODEL: it exports that model's graphs")
    else:
        progress.note(f"checking against model {args.model} ({FROM_COMMAND_LINE})")
        loaded = load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="attnx-stream-") as tmp:
        if not args.file:
            export_step(loaded, Path(tmp) / "model.onnx", progress, dtype=args.dtype, opset=args.opset,
                        mode="both")
            paths = stream_paths(Path(tmp) / "model.onnx", "both")
        prompts = prompt_lens(args)
        with progress.step(f"stream check {loaded.name}: prefill {', '.join(map(str, prompts))} then "
                           f"{args.new_tokens} decode steps, against the full model in float64"):
            reports = check_stream(loaded, paths["prefill"], paths["decode"], prompt_lens=prompts,
                                   new_tokens=args.new_tokens, batch=args.batch, seed=args.seed,
                                   providers=args.providers, plugin_library=args.plugins, progress=progress.note)
    for report in reports:
        print(report.verdict() if progress.verbosity < 0 else report.to_text())
    passed = all(r.passed for r in reports)
    if args.json:
        write_text(args.json, strict_json({"passed": passed, "mode": "stream",
                                           "reports": [r.to_json() for r in reports]}))
    return 0 if passed else 1
