"""`attnx plugins build | info | path`: the TensorRT plugin library.

Progress goes to stderr; what a script reads (the library's path, `info --json`) goes to stdout.
"""

from __future__ import annotations

import json
import sys

from attnx.cli.options import ListOption, add_plugin_library, at_least


def log(message: str) -> None:
    """A progress line, on stderr."""
    print(message, file=sys.stderr, flush=True)


def add_parser(subparsers) -> None:
    from attnx.plugins.build import DEFAULT_ARCHS

    p = subparsers.add_parser("plugins", help="build the TensorRT plugin library, list its creators, print its path")
    sub = p.add_subparsers(dest="plugins_command", required=True, metavar="SUBCOMMAND")

    b = sub.add_parser("build", help="build libattnx_plugins.so with CMake and nvcc (no TensorRT runtime needed)")
    b.add_argument("--arch", action=ListOption, metavar="SM",
                   help=f"CUDA compute capabilities; repeat or comma-separate (default {','.join(DEFAULT_ARCHS)})")
    b.add_argument("--out", default=None, help="build folder (default: build/trt_plugins in a checkout, else "
                                                 "$XDG_CACHE_HOME/attnx/trt_plugins-VERSION, ~/.cache without it)")
    b.add_argument("--jobs", type=at_least(1), default=None, help="parallel compile jobs (default: CPU count)")
    b.set_defaults(run=run_build)

    i = sub.add_parser("info", help="each creator's name, version, namespace and fields, as the library reports them")
    i.add_argument("--json", action="store_true", help="print JSON")
    add_plugin_library(i, flag="--lib")
    i.set_defaults(run=run_info)

    q = sub.add_parser("path", help="print the plugin library's path")
    add_plugin_library(q, flag="--lib")
    q.set_defaults(run=run_path)


def run_build(args) -> int:
    from attnx.plugins.build import DEFAULT_ARCHS, build_library
    from attnx.plugins.library import ENV_VAR, default_library_path

    lib = build_library(args.arch or DEFAULT_ARCHS, out_dir=args.out, log=log, jobs=args.jobs)
    if lib.resolve() != default_library_path().resolve():
        log(f"[attnx] not the default build dir: pass --lib/--plugins {lib} or set {ENV_VAR}={lib}")
    print(lib)
    return 0


def _field_text(field: dict) -> str:
    return f"{field['name']} {field['type']} = {field.get('default')!r}"


def run_info(args) -> int:
    from attnx.plugins.library import library_path, plugin_info

    path = library_path(args.plugins)
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


def run_path(args) -> int:
    from attnx.plugins.library import library_path

    print(library_path(args.plugins))
    return 0
