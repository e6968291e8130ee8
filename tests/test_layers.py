"""The layers of attnx/, lowest first: a module imports only its own layer or lower ones.

Read from the source with ast (nothing is imported), so an import inside a function counts as
much as one at the top, and so does `importlib.import_module("attnx....")` with a literal name.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attnx"

LAYERS = (  # lowest first; the names of one entry share a layer
    {"errors", "files", "progress"},
    {"ops"},
    {"models"},
    {"exporters"},
    {"surgeon"},
    {"plugins"},
    {"check"},
    {"bench", "generate", "serve", "train"},
    {"cli"},
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module name) of every attnx module `module` imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from attnx import check` imports the module attnx.check
            found += [(node.lineno, f"{source}.{a.name}" if source == "attnx" else source) for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args):
            arg = node.args[0]
            text = arg.value if isinstance(arg, ast.Constant) else (
                arg.values[0].value if isinstance(arg, ast.JoinedStr) and arg.values
                and isinstance(arg.values[0], ast.Constant) else None)
            if isinstance(text, str):
                found.append((node.lineno, text.rstrip(".")))
    return [(line, name) for line, name in found if name == "attnx" or name.startswith("attnx.")]


def _layer(module: str) -> str | None:
    """The layer of an attnx module: its first name below attnx (None for `attnx` itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")  # the root holds no code


def test_the_reader_sees_every_form_of_import():
    source = ("import attnx.ops.spec\nfrom attnx import check\nfrom . import data\nfrom ..models import zoo\n"
              "def f():\n    from attnx.cli.main import main\n    importlib.import_module(f'attnx.bench.{name}')\n"
              "import numpy\n")
    assert [name for _, name in _imported(ast.parse(source), "attnx.check.parity", False)] == [
        "attnx.ops.spec", "attnx.check", "attnx.check", "attnx.models", "attnx.cli.main", "attnx.bench"]


def test_every_module_has_a_layer():
    unknown = sorted({_layer(_module_name(p)) for p in MODULES} - set(RANK))
    assert not unknown, f"attnx/ holds {', '.join(unknown)}, which no layer names: add each to LAYERS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_a_higher_layer(path):
    module = _module_name(path)
    own = _layer(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    upward = [f"line {line}: imports {name} (layer {_layer(name)}, above {own})"
              for line, name in _imported(tree, module, path.name == "__init__.py")
              if _layer(name) in RANK and RANK[_layer(name)] > RANK[own]]
    assert not upward, f"{module} (layer {own}) imports a higher layer:\n" + "\n".join(upward)
