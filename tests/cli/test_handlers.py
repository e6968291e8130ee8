"""Command handlers read their parsed arguments and never assign to them (read from the source)."""

import ast
from pathlib import Path

import pytest

ATTNX = Path(__file__).resolve().parents[2] / "attnx"
HANDLER_MODULES = sorted([*(ATTNX / "cli").glob("*.py"), *(ATTNX / "bench").glob("*.py")])


def _assignments_to_args(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "args":
                    found.append(f"line {t.lineno}: args.{t.attr} assigned")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr")
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "args"):
            found.append(f"line {node.lineno}: {node.func.id}(args, ...)")
    return found


def test_the_reader_sees_an_assignment():
    source = "args.json = 1\nargs.a, args.b = 1, 2\nsetattr(args, 'x', 1)\n"
    assert _assignments_to_args(ast.parse(source)) == [
        "line 1: args.json assigned", "line 2: args.a assigned", "line 2: args.b assigned",
        "line 3: setattr(args, ...)"]


@pytest.mark.parametrize("path", HANDLER_MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_handlers_do_not_mutate_args(path):
    found = _assignments_to_args(ast.parse(path.read_text(), filename=str(path)))
    assert not found, f"{path.relative_to(ATTNX.parent)} changes its parsed arguments:\n" + "\n".join(found)
