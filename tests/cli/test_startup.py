"""Start-up: help, the zoo and usage errors answer without importing the heavy libraries.

Each case runs `attnx.cli.main.main` in a fresh interpreter and reads `sys.modules` at its exit,
so an import anywhere on the way (a parser, a default, the zoo) shows, whatever the timing.
"""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "onnxruntime", "polygraphy", "onnx_graphsurgeon", "onnxscript")
COMMANDS = ("zoo", "export", "check", "convert", "generate", "optimize", "bench", "plugins", "build", "triton")
ZOO_NAMES = ["softmax-tiny", "softmax-sqrtd-tiny", "linear-tiny", "performer-tiny", "gau-tiny", "gau-n-tiny",
             "gau-fixed-tiny", "gau-softmax-tiny", "flash-tiny", "local-tiny", "dilated-tiny", "strided-tiny",
             "transnormer-tiny", "vit-rope2d-tiny", "gau-n-trained", "gau-fixed-trained", "gau-softmax-trained",
             "softmax-sqrtd-trained", "softmax-trained", "linear-trained", "flash-trained"]
MARK = "HEAVY-MODULES:"
_PROBE = f"""
import sys
from attnx.cli.main import main
sys.argv = ["attnx", *sys.argv[1:]]
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print({MARK!r}, sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}), file=sys.stderr)
sys.exit(code)
"""


def probe(*args):
    """(exit code, stdout, stderr without the probe's line, the heavy modules imported)."""
    env = {**os.environ, "COLUMNS": "2000"}  # one help entry a line: argparse wraps at hyphens
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120,
                          env=env)
    err, _, heavy = proc.stderr.rpartition(MARK)
    assert heavy, f"expected the probe's {MARK} line on stderr, found: {proc.stderr!r}"
    return proc.returncode, proc.stdout, err, heavy.strip()


def assert_light(args, heavy):
    assert heavy == "[]", f"attnx {' '.join(args)}: expected no heavy module imported, found {heavy}"


def test_top_level_help_lists_every_command():
    code, out, err, heavy = probe("--help")
    assert_light(["--help"], heavy)
    assert code == 0, err
    for command in COMMANDS:
        assert f"\n    {command} " in out, f"expected {command!r} in `attnx --help`, found:\n{out}"


@pytest.mark.parametrize("args", [[c, "--help"] for c in COMMANDS]
                         + [["plugins", "build", "--help"],
                            ["plugins", "info", "--help"], ["plugins", "path", "--help"]])
def test_command_help_is_light(args):
    code, out, err, heavy = probe(*args)
    assert_light(args, heavy)
    assert code == 0, err
    assert out.startswith(f"usage: attnx {' '.join(args[:-1])}"), out


def test_optimize_help_lists_the_passes_and_targets():
    from attnx.surgeon.pipeline import PASSES
    from attnx.surgeon.retarget import TARGETS

    code, out, _, heavy = probe("optimize", "--help")
    assert_light(["optimize", "--help"], heavy)
    assert f"(default all: {','.join(PASSES)})" in out, out
    assert "{" + ",".join(TARGETS) + "}" in out, out


def test_bench_help_lists_the_benchmarks_without_importing_them():
    from attnx.bench import BENCHMARKS

    code, out, _, heavy = probe("bench", "--help")
    assert_light(["bench", "--help"], heavy)
    assert code == 0
    for name in BENCHMARKS:
        assert f"    {name} " in out or f"    {name}\n" in out, out


def test_bench_options_still_parse_once_named():
    code, out, err, _ = probe("bench", "reassoc", "--help")
    assert code == 0, err
    assert "--lengths" in out and out.startswith("usage: attnx bench reassoc"), out


@pytest.mark.parametrize("args", [["zoo"], ["zoo", "--json"]])
def test_zoo_lists_its_models(args):
    code, out, err, heavy = probe(*args)
    assert_light(args, heavy)
    assert code == 0, err
    names = ([e["name"] for e in json.loads(out)] if "--json" in args
             else [line.split()[0] for line in out.splitlines()])
    assert names == ZOO_NAMES


@pytest.mark.parametrize("args", [["check", "--seq-len", "0"], ["export"], ["bogus"], ["optimize", "in.onnx"],
                                  ["check", "--dtype", "fp8"], ["optimize", "a", "-o", "b", "--target", "x"],
                                  ["build", "f.onnx"], ["generate", "--new-tokens", "-1"],
                                  ["plugins", "build", "--nope"], ["bench"], ["triton", "serve"],
                                  ["triton", "linear-tiny"], ["triton", "linear-tiny", "--backend", "x"]])
def test_usage_errors_exit_2_at_once(args):
    code, _, err, heavy = probe(*args)
    assert_light(args, heavy)
    assert code == 2, f"attnx {' '.join(args)}: expected exit 2, found {code}: {err}"
    assert "error:" in err, err


def test_the_zoo_still_builds_its_models():
    """The light declaration builds what it names: every entry a module whose outputs are logits."""
    import torch

    from attnx.models import ZOO, load_model

    for name in ("gau-tiny", "transnormer-tiny", "vit-rope2d-tiny"):
        loaded = load_model(name, batch=2, seq_len=8)
        assert isinstance(loaded.module, torch.nn.Module), name
        assert loaded.module(*loaded.example_inputs).shape[0] == 2, name
    assert type(ZOO["gau-tiny"].create().blocks[0].attention).__name__ == "GAU"
