"""`attnx convert [MODEL] [-o DIR]`: export, optimize, check in ONNX Runtime, then as a TensorRT engine
where TensorRT is installed; every file lands in DIR, named after the model."""

from __future__ import annotations

from pathlib import Path

from attnx.cli.check import check_step
from attnx.cli.export import export_step
from attnx.cli.options import (MODEL_HELP, add_check_options, add_export_options, add_plugin_library, add_seq_lens,
                               seq_lens)
from attnx.files import atomic_output, check_output_folder, check_output_path, folder_lock


def add_parser(subparsers) -> None:
    from attnx.models import DEFAULT_MODEL

    p = subparsers.add_parser("convert", help="export, optimize, check in ONNX Runtime, then as a TensorRT engine "
                                              "where TensorRT is installed")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=MODEL_HELP + f" (default {DEFAULT_MODEL})")
    p.add_argument("-o", "--output", default="attnx-out", help="output folder (default attnx-out)")
    add_seq_lens(p)
    add_export_options(p)
    add_check_options(p)
    add_plugin_library(p, use="for the engine check")
    p.set_defaults(run=run)


def _name(model_ref: str) -> str:
    """The files' stem: the zoo name, or `file-factory` for path/file.py:factory."""
    path, sep, factory = model_ref.rpartition(":")
    return f"{Path(path).stem}-{factory}" if sep and path.endswith(".py") else model_ref


def _optimize(onnx_path: Path, out: Path, progress) -> None:
    """The surgeon's passes on an exported file, written in the ort form."""
    import onnx

    from attnx.surgeon.pipeline import optimize_model

    with progress.step(f"optimize {onnx_path} → {out} (all passes, ort form)"):
        optimized, reports = optimize_model(onnx.load(onnx_path), "ort")
        with atomic_output(out) as staged:
            onnx.save(optimized, staged)
        for r in reports:
            changes = [d["change"] for d in r.details if d["rewritten"]]
            progress.note(f"{r.name}: matched {r.matched}, rewritten {r.rewritten}"
                          + (f" ({'; '.join(changes)})" if changes else ""))


def run(args) -> int:
    from attnx.check.identity import FROM_COMMAND_LINE
    from attnx.errors import BackendUnavailableError
    from attnx.models import load_model
    from attnx.plugins.engine import require_tensorrt
    from attnx.plugins.library import library_path
    from attnx.progress import Progress, warn

    try:
        require_tensorrt()
        no_trt = None
    except BackendUnavailableError as exc:
        no_trt = str(exc)
    progress = Progress(3 if no_trt else 4)
    out_dir, name = check_output_folder(args.output, "-o"), _name(args.model)
    onnx_path, optimized_path = out_dir / f"{name}.onnx", out_dir / f"{name}.optimized.onnx"
    ort_json = check_output_path(args.json, "--json") if args.json else out_dir / f"{name}.parity.json"
    trt_json = out_dir / f"{name}.trt-parity.json"
    for path in (onnx_path, optimized_path, ort_json, trt_json):  # every output, before any work
        check_output_path(path, "convert output", make_parents=True)
    if args.plugins is not None and no_trt:
        warn("attnx convert", f"--plugins {args.plugins} has no effect: TensorRT is not installed here, so the engine "
                              "check, the one step that loads the plugin library, does not run")
    elif not no_trt:
        library_path(args.plugins)  # the engine check's library: one that is not there is refused before the work
    # one convert at a time per folder: a second one waits, and never reads this one's files
    with folder_lock(out_dir, progress.note):
        progress.note(f"checking against model {args.model} ({FROM_COMMAND_LINE})")
        # one model for every step, its example traced at the zoo's sizes or a factory's own; --batch is
        # the parity runs' (their inputs are drawn afresh at each batch and length)
        loaded = load_model(args.model)
        export_step(loaded, onnx_path, progress, dtype=args.dtype, opset=args.opset)
        _optimize(onnx_path, optimized_path, progress)

        def check(backend: str, json_path) -> int:
            return check_step(optimized_path, loaded, progress, backend=backend, seq_lens=seq_lens(args),
                              batch=args.batch, seed=args.seed, plugins=args.plugins, json_path=json_path)

        status = check("ort", ort_json)
        if no_trt:  # the engine rung of the ladder: said, never skipped silently
            progress.note(f"engine check not run: {no_trt}")
            return status
        return max(status, check("trt", trt_json))
