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
    p._option_string_actions["--opset"].help = (  # convert's default differs from export's
        "ONNX opset (default: a zoo model's own, 18 or 23; for path/file.py:factory 23 where the installed "
        "onnxruntime runs opset 23's Attention and RotaryEmbedding, else 18; the choice and why are printed)")
    add_check_options(p)
    add_plugin_library(p, use="for the engine check")
    p.set_defaults(run=run)


def _name(model_ref: str) -> str:
    """The files' stem: the zoo name, or `file-factory` for path/file.py:factory."""
    path, sep, factory = model_ref.rpartition(":")
    return f"{Path(path).stem}-{factory}" if sep and path.endswith(".py") else model_ref


def _optimize(onnx_path: Path, out: Path, progress, export_len: int | None = None) -> int:
    """The surgeon's passes on an exported file, written in the ort form; every candidate's outcome noted
    as `optimize` prints it, and, where the export holds ONNX Attention/RotaryEmbedding, the standard-node
    check of the written file (1 when it does worse than the export, else 0)."""
    import onnx

    from attnx.cli.optimize import check_standard, report_lines, say_standard
    from attnx.surgeon.pipeline import optimize_model

    with progress.step(f"optimize {onnx_path} → {out} (all passes, ort form)"):
        exported = onnx.load(onnx_path)
        optimized, reports = optimize_model(exported, "ort")
        standard = check_standard(exported, optimized, optimized, "ort", export_len=export_len)
        with atomic_output(out) as staged:
            onnx.save(optimized, staged)
        for line in report_lines(reports):
            progress.note(line)
        return say_standard(standard, "attnx convert", progress.note)


def choose_opset(given: int | None, loaded) -> tuple[int, str]:
    """(the opset convert exports at, why): `given` (--opset) where the installed ONNX Runtime runs it (else
    an AttnxError, exit 2); a zoo model's own; for a user's model 23 where ONNX Runtime runs opset 23's
    Attention and RotaryEmbedding (softmax attention and RoPE can then be fused), else 18."""
    from attnx.errors import AttnxError
    from attnx.exporters import DEFAULT_OPSET, OPSETS, default_opset
    from attnx.models import ZOO
    from attnx.surgeon.standard_nodes import STANDARD_OPSET, ort_opset_support

    if given is not None:
        if given not in OPSETS:  # argparse's choices refuse it first; a caller of this function may not
            raise AttnxError(f"--opset: expected one of {', '.join(map(str, OPSETS))}, found {given}")
        ok, said = ort_opset_support(given)
        if not ok:
            raise AttnxError(f"--opset {given}: expected an opset the installed ONNX Runtime runs, found that "
                             f"{said}; give --opset {DEFAULT_OPSET}")
        return given, "given with --opset"
    if loaded.name in ZOO:
        opset = default_opset(loaded.module)
        return opset, ("the zoo model's own: " + ("its softmax attention or RoPE exports as ONNX "
                                                   "Attention/RotaryEmbedding" if opset >= STANDARD_OPSET
                                                   else "its attention needs no opset-23 op"))
    ok, said = ort_opset_support(STANDARD_OPSET)
    if ok:
        return STANDARD_OPSET, (f"{said}: softmax attention and RoPE can be fused there "
                                f"(--opset {DEFAULT_OPSET} for an older runtime)")
    return DEFAULT_OPSET, (f"{said}: at opset {DEFAULT_OPSET} softmax attention and RoPE are left unfused "
                           f"(they need opset {STANDARD_OPSET}); upgrade onnxruntime for them")


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
        opset, why = choose_opset(args.opset, loaded)
        progress.note(f"opset {opset}: {why}")
        export_step(loaded, onnx_path, progress, dtype=args.dtype, opset=opset)
        standard = _optimize(onnx_path, optimized_path, progress, loaded.seq_len) or 0

        def check(backend: str, json_path) -> int:
            return check_step(optimized_path, loaded, progress, backend=backend, seq_lens=seq_lens(args),
                              batch=args.batch, seed=args.seed, plugins=args.plugins, json_path=json_path)

        status = max(standard, check("ort", ort_json))
        if no_trt:  # the engine rung of the ladder: said, never skipped silently
            progress.note(f"engine check not run: {no_trt}")
            return status
        return max(status, check("trt", trt_json))
