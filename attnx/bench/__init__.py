"""Benchmarks: `attnx bench NAME`. Each prints ratios against a baseline run side by side.

A benchmark is a module in this package with `DESCRIPTION`, `add_arguments(parser)` and
`run(args) -> int`; it is listed here by name.
"""

from __future__ import annotations

import importlib

BENCHMARKS: dict[str, str] = {  # name → module in attnx.bench
    "stream": "stream",
    "length-generalisation": "length_generalisation",
    "reassoc": "reassoc",
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks (see `attnx bench --help`)")
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(f"attnx.bench.{module_name}")
        bp = sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(bp)
        bp.set_defaults(run=module.run)
