"""`attnx bench NAME`: one subcommand per benchmark of attnx.bench, each with its own options.

A benchmark's module (which imports torch and ONNX Runtime) is imported, and its options added,
only when the command line names that benchmark: `attnx --help` and `attnx bench --help` list
the benchmarks from attnx.bench's declaration alone. The benchmarks sit below the CLI's layer:
their list flags name attnx's one list style as `action="list"` (ListOption, registered here).
"""

from __future__ import annotations

import argparse
import importlib

from attnx.cli.options import ListOption


class _BenchmarkParser(argparse.ArgumentParser):
    """A benchmark's parser: its module adds the options when argparse first parses with it."""

    def __init__(self, *args, benchmark: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", "list", ListOption)
        self._benchmark, self._loaded = benchmark, False

    def parse_known_args(self, args=None, namespace=None):
        if not self._loaded:
            module = importlib.import_module(f"attnx.bench.{self._benchmark}")
            module.add_arguments(self)
            self.set_defaults(run=module.run)
            self._loaded = True
        return super().parse_known_args(args, namespace)


def add_parser(subparsers) -> None:
    from attnx.bench import BENCHMARKS

    p = subparsers.add_parser("bench", help="benchmarks (see `attnx bench --help`)")
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK", parser_class=_BenchmarkParser)
    for name, (module_name, description) in BENCHMARKS.items():
        sub.add_parser(name, help=description, description=description, benchmark=module_name)
