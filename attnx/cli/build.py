"""`attnx build FILE.onnx -o FILE.engine`: a TensorRT engine with the attnx plugin library."""

from __future__ import annotations

from attnx.cli.options import ListOption, add_plugin_library
from attnx.cli.plugins import log


def add_parser(subparsers) -> None:
    from attnx.plugins.engine import DEFAULT_SHAPES

    defaults = ",".join(f"{axis}:{r.min}:{r.opt}:{r.max}" for axis, r in DEFAULT_SHAPES.items())
    e = subparsers.add_parser("build", help="build a TensorRT engine from an ONNX file (needs TensorRT)")
    e.add_argument("file", help="ONNX file in attnx form (retargeted on the way) or TensorRT form")
    e.add_argument("-o", "--output", required=True, help="engine file to write")
    precision = e.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="allow float16 kernels")
    precision.add_argument("--bf16", action="store_true", help="allow bfloat16 kernels")
    add_plugin_library(e)
    e.add_argument("--shapes", action=ListOption, metavar="AXIS:MIN:OPT:MAX",
                   help="optimisation profile of a dynamic axis (batch, seq, past); bare MIN:OPT:MAX is seq; repeat "
                        f"or comma-separate (default {defaults}, past as seq)")
    e.set_defaults(run=run)


def _unused_axes(model, shapes) -> list[str]:
    """The axes of `shapes` that no input of `model` has (a profile for them sizes nothing)."""
    named = {d.dim_param for inp in model.graph.input for d in inp.type.tensor_type.shape.dim}
    return [axis for axis in shapes if axis not in named]


def run(args) -> int:
    from attnx.check import load_onnx
    from attnx.files import check_output_path
    from attnx.plugins.engine import build_engine, parse_shapes, require_tensorrt
    from attnx.plugins.library import library_path
    from attnx.progress import warn

    # the command's own arguments first: a usage error says so even where TensorRT is missing
    shapes = parse_shapes(args.shapes or [])
    check_output_path(args.output, "-o", make_parents=True)
    model = load_onnx(args.file)
    if args.plugins is not None:
        library_path(args.plugins)
    for axis in _unused_axes(model, shapes):
        warn("attnx build", f"--shapes {axis}:... has no effect: no input of {args.file} has a dynamic axis {axis!r}")
    require_tensorrt()
    precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
    log(f"[attnx] building {args.output} from {args.file} ({precision})")
    out = build_engine(model, args.output, precision=precision, plugin_library=args.plugins, shapes=shapes)
    print(out)
    return 0
