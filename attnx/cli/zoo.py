"""`attnx zoo [--json]`: the built-in models."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="list the built-in models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    from attnx.models import ZOO

    if args.json:
        print(json.dumps([{"name": e.name, "description": e.description, "seed": e.seed} for e in ZOO.values()],
                         indent=2))
    else:
        width = max(len(name) for name in ZOO)
        for e in ZOO.values():
            print(f"{e.name:<{width}} {e.description}")
    return 0
