"""Benchmarks: `attnx bench NAME`. Each prints ratios against a baseline run side by side.

A benchmark is a module in this package with `DESCRIPTION`, `add_arguments(parser)` and
`run(args) -> int`; it is listed here by name (attnx.cli.bench makes each a subcommand).
"""

BENCHMARKS: dict[str, str] = {  # name → module in attnx.bench
    "stream": "stream",
    "length-generalisation": "length_generalisation",
    "reassoc": "reassoc",
}
