"""`attnx build FILE.onnx -o FILE.engine`: a TensorRT engine with the attnx plugin library."""

from __future__ import annotations

from attnx.cli.options import add_plugin_library
from attnx.cli.plugins import log


def add_parser(subparsers) -> None:
    from attnx.plugins.engine import DEFAULT_SHAPES

    defaults = " ".join(f"{axis}:{r.min}:{r.opt}:{r.max}" for axis, r in DEFAULT_SHAPES.items())
    e = subparsers.add_parser("build", help="build a TensorRT engine from an ONNX file (needs TensorRT)")
    e.add_argument("file", help="ONNX file in attnx form (retargeted on the way) or TensorRT form")
    e.add_argument("-o", "--output", required=True, help="engine file to write")
    precision = e.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="allow float16 kernels")
    precision.add_argument("--bf16", action="store_true", help="allow bfloat16 kernels")
    add_plugin_library(e)
    e.add_argument("--shapes", nargs="+", metavar="AXIS:MIN:OPT:MAX",
                   help="optimisation profile of a dynamic axis (batch, seq, past); bare MIN:OPT:MAX is seq "
                        f"(default {defaults}, past as seq)")
    e.set_defaults(run=run)


def run(args) -> int:
    from attnx.check import load_onnx
    from attnx.plugins.engine import build_engine, parse_shapes, require_tensorrt

    require_tensorrt()  # before anything else: without TensorRT nothing below can run
    precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
    shapes = parse_shapes(args.shapes or [])
    log(f"[attnx] building {args.output} from {args.file} ({precision})")
    out = build_engine(load_onnx(args.file), args.output, precision=precision, plugin_library=args.plugins,
                       shapes=shapes)
    print(out)
    return 0
