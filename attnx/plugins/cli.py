"""`attnx plugins build | info | path` and `attnx build FILE.onnx -o FILE.engine`.

`add_parsers(subparsers)` registers both commands on attnx's top-level subparsers. Progress goes
to stderr; what a script reads (the library's path, `info --json`) goes to stdout.
"""

from __future__ import annotations

import json
import sys

from attnx.errors import AttnxError


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse_archs(text: str) -> list[str]:
    archs = [a.strip() for a in text.split(",") if a.strip()]
    if not archs:
        raise AttnxError(f"--arch {text!r}: expected a comma-separated list of compute capabilities like 87,90")
    return archs


def cmd_plugins_build(args) -> int:
    from attnx.plugins.build import build_library
    from attnx.plugins.library import ENV_VAR, default_library_path

    if args.jobs is not None and args.jobs < 1:
        raise AttnxError(f"--jobs must be >= 1, got {args.jobs}")
    lib = build_library(_parse_archs(args.arch), out_dir=args.out, log=_log, jobs=args.jobs)
    if lib.resolve() != default_library_path().resolve():
        _log(f"[attnx] not the default build dir: pass --lib/--plugins {lib} or set {ENV_VAR}={lib}")
    print(lib)
    return 0


def _field_text(field: dict) -> str:
    value = field.get("default")
    return f"{field['name']} {field['type']} = {value!r}"


def cmd_plugins_info(args) -> int:
    from attnx.plugins.library import library_path, plugin_info

    path = library_path(args.lib)
    creators = plugin_info(path)
    if args.json:
        print(json.dumps({"library": str(path), "creators": creators}, indent=2))
        return 0
    print(f"{path}: {len(creators)} creator(s)")
    for c in creators:
        print(f"  {c['name']} version {c['version']} namespace {c['namespace']}")
        for f in c["fields"]:
            print(f"    {_field_text(f)}")
    return 0


def cmd_plugins_path(args) -> int:
    from attnx.plugins.library import library_path

    print(library_path(args.lib))
    return 0


def cmd_build(args) -> int:
    from attnx.plugins.engine import build_engine, parse_shapes, require_tensorrt

    require_tensorrt()  # before anything else: without TensorRT nothing below can run
    precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
    shapes = parse_shapes(args.shapes or [])
    _log(f"[attnx] building {args.output} from {args.file} ({precision})")
    out = build_engine(args.file, args.output, precision=precision, plugin_library=args.plugins, shapes=shapes)
    print(out)
    return 0


def add_parsers(subparsers) -> None:
    """Register `plugins` (build, info, path) and `build` on attnx's top-level subparsers."""
    from attnx.plugins.build import DEFAULT_ARCHS

    lib_help = "plugin library (default: $ATTNX_PLUGIN_LIB, else build/trt_plugins/libattnx_plugins.so)"
    p = subparsers.add_parser("plugins", help="build the TensorRT plugin library, list its creators, print its path")
    sub = p.add_subparsers(dest="plugins_command", required=True, metavar="SUBCOMMAND")

    b = sub.add_parser("build", help="build libattnx_plugins.so with CMake and nvcc (no TensorRT runtime needed)")
    b.add_argument("--arch", default=",".join(DEFAULT_ARCHS),
                   help=f"CUDA compute capabilities, comma-separated (default {','.join(DEFAULT_ARCHS)})")
    b.add_argument("--out", default=None, help="build folder (default build/trt_plugins in the repository)")
    b.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: CPU count)")
    b.set_defaults(run=cmd_plugins_build)

    i = sub.add_parser("info", help="each creator's name, version, namespace and fields, as the library reports them")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--lib", default=None, help=lib_help)
    i.set_defaults(run=cmd_plugins_info)

    q = sub.add_parser("path", help="print the plugin library's path")
    q.add_argument("--lib", default=None, help=lib_help)
    q.set_defaults(run=cmd_plugins_path)

    e = subparsers.add_parser("build", help="build a TensorRT engine from an ONNX file (needs TensorRT)")
    e.add_argument("file", help="ONNX file in attnx form (retargeted on the way) or TensorRT form")
    e.add_argument("-o", "--output", required=True, help="engine file to write")
    precision = e.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="allow float16 kernels")
    precision.add_argument("--bf16", action="store_true", help="allow bfloat16 kernels")
    e.add_argument("--plugins", metavar="LIB", default=None, help=lib_help)
    e.add_argument("--shapes", nargs="+", metavar="AXIS:MIN:OPT:MAX",
                   help="optimisation profile of a dynamic axis (batch, seq, past); bare MIN:OPT:MAX is seq "
                        "(default batch:1:1:8 seq:1:128:1024, past as seq)")
    e.set_defaults(run=cmd_build)

