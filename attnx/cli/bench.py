"""`attnx bench NAME`: one subcommand per benchmark of attnx.bench, each with its own options."""

from __future__ import annotations

import importlib


def add_parser(subparsers) -> None:
    from attnx.bench import BENCHMARKS

    p = subparsers.add_parser("bench", help="benchmarks (see `attnx bench --help`)")
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(f"attnx.bench.{module_name}")
        bp = sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(bp)
        bp.set_defaults(run=module.run)
