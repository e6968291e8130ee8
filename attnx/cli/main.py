"""attnx command line: zoo | export | check | optimize | convert | generate | bench | plugins | build."""

from __future__ import annotations

import argparse
import sys

from attnx.cli import bench, build, check, convert, export, generate, optimize, plugins, zoo
from attnx.errors import AttnxError

COMMANDS = (zoo, export, check, convert, generate, optimize, bench, plugins, build)  # in `attnx --help` order


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser; each sets `run`, the handler that takes the parsed args."""
    parser = argparse.ArgumentParser(prog="attnx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except AttnxError as exc:
        print(f"attnx {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
