"""Issue 16's smaller items for export, convert, build, plugins and bench: factory models and the
trace sizes, one list style, warnings for flags without effect, arguments checked before optional
dependencies, optional dependencies checked before the work."""

import sys
import textwrap

import pytest

from attnx.cli.main import build_parser, main
from attnx.errors import BackendUnavailableError, ModelFactoryError
from attnx.models import load_model

FACTORIES = textwrap.dedent("""
    import torch
    from attnx.models import LinearAttention

    def _model():
        torch.manual_seed(0)
        return LinearAttention(16, 2)

    def plain():
        return _model(), (torch.randn(2, 9, 16),)

    def sized(batch=3, seq_len=11):
        return _model(), (torch.randn(batch, seq_len, 16),)

    def keywords(**sizes):
        return _model(), (torch.randn(sizes.get("batch", 3), sizes.get("seq_len", 11), 16),)

    def required(batch, seq_len):
        return _model(), (torch.randn(batch, seq_len, 16),)

    def ignores(batch=3, seq_len=11):
        return _model(), (torch.randn(2, 9, 16),)
""")
NO_TENSORRT = "TensorRT is not installed here"


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    path = tmp_path_factory.mktemp("factories") / "models.py"
    path.write_text(FACTORIES)
    return lambda name: f"{path}:{name}"


def _shape(loaded):
    return list(loaded.example_inputs[0].shape), (loaded.batch, loaded.seq_len)


# ---------------------------------------------------------------- factories and the trace sizes

def test_a_factory_taking_the_sizes_is_called_with_those_given(factories):
    assert _shape(load_model(factories("sized"), batch=4, seq_len=5)) == ([4, 5, 16], (4, 5))
    assert _shape(load_model(factories("sized"), seq_len=5)) == ([3, 5, 16], (3, 5))  # batch: the factory's own
    assert _shape(load_model(factories("keywords"), batch=4)) == ([4, 11, 16], (4, 11))  # **kwargs takes them
    assert _shape(load_model(factories("sized"))) == ([3, 11, 16], (3, 11))
    # a size the factory requires and nobody gave: the zoo's
    assert _shape(load_model(factories("required"))) == ([2, 32, 16], (2, 32))


def test_a_factory_without_the_keyword_refuses_the_size(factories):
    assert _shape(load_model(factories("plain"))) == ([2, 9, 16], (2, 9))
    with pytest.raises(ModelFactoryError, match=r"batch 4 was asked for \(--batch .*takes no 'batch' keyword.*"
                                                r"found plain\(\)"):
        load_model(factories("plain"), batch=4)
    with pytest.raises(ModelFactoryError, match="takes no 'seq_len' keyword"):
        load_model(factories("plain"), seq_len=5)


def test_a_factory_that_ignores_the_size_it_takes_is_refused(factories):
    with pytest.raises(ModelFactoryError, match=r"called with batch=4, to return example inputs of batch 4 at dim 0, "
                                                r"found input 0 of shape \[2, 9, 16\]"):
        load_model(factories("ignores"), batch=4)


def test_zoo_models_draw_at_the_sizes_as_before():
    from attnx.cli.export import traced_at
    from attnx.cli.options import TRACE_BATCH, TRACE_LEN
    from attnx.models.zoo import ZOO_BATCH, ZOO_SEQ_LEN

    assert (TRACE_BATCH, TRACE_LEN) == (ZOO_BATCH, ZOO_SEQ_LEN)  # the help's default is the zoo's
    loaded = load_model("linear-tiny")
    assert _shape(loaded) == ([2, 32], (2, 32)) and traced_at(loaded) == "traced at batch 2, seq 32"
    assert _shape(load_model("linear-tiny", batch=3, seq_len=7)) == ([3, 7], (3, 7))


def test_export_says_the_sizes_it_traced(factories, tmp_path, capsys):
    assert main(["export", factories("sized"), "-o", str(tmp_path / "m.onnx"), "--batch", "4", "--seq-len", "5"]) == 0
    assert "traced at batch 4, seq 5" in capsys.readouterr().err
    # a factory without the keywords: the flags refused, before anything is written
    assert main(["export", factories("plain"), "-o", str(tmp_path / "p.onnx"), "--seq-len", "5"]) == 2
    err = capsys.readouterr().err
    assert "attnx export: error:" in err and "takes no 'seq_len' keyword" in err and not (tmp_path / "p.onnx").exists()


def test_convert_traces_apart_from_its_parity_batch(monkeypatch, tmp_path):
    """convert's --batch is the parity runs' batch: the trace stays at the zoo's sizes (batch 1 would
    make torch.export specialise the batch axis)."""
    import attnx.cli.convert as convert

    seen = {}
    monkeypatch.setattr(convert, "export_step",
                        lambda loaded, *a, **k: seen.update(trace=(loaded.batch, loaded.seq_len)))
    monkeypatch.setattr(convert, "_optimize", lambda *a: None)
    monkeypatch.setattr(convert, "check_step", lambda *a, batch, **k: seen.setdefault("parity", []).append(batch) or 0)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["convert", "linear-tiny", "--batch", "1", "-o", str(tmp_path / "out")]) == 0
    assert seen == {"trace": (2, 32), "parity": [1]}


# ---------------------------------------------------------------- one list style

@pytest.mark.parametrize("argv, dest, expected", [
    (["build", "f.onnx", "-o", "e", "--shapes", "batch:1:2:4,seq:1:64:512", "--shapes", "past:1:8:64"], "shapes",
     ["batch:1:2:4", "seq:1:64:512", "past:1:8:64"]),
    (["plugins", "build", "--arch", "87,90", "--arch", "80"], "arch", ["87", "90", "80"]),
    (["bench", "stream", "--models", "linear-tiny,gau-tiny", "--models", "softmax-tiny", "--positions", "4,8",
      "--positions", "16"], "positions", [4, 8, 16]),
    (["bench", "stream", "--models", "linear-tiny,gau-tiny", "--models", "softmax-tiny"], "models",
     ["linear-tiny", "gau-tiny", "softmax-tiny"]),
    (["bench", "reassoc", "--lengths", "8,16", "--lengths", "32"], "lengths", [8, 16, 32]),
])
def test_list_flags_repeat_and_comma_separate(argv, dest, expected):
    assert getattr(build_parser().parse_args(argv), dest) == expected


@pytest.mark.parametrize("argv, message", [
    (["build", "f.onnx", "-o", "e", "--shapes", "batch:1:2:4", "seq:1:64:512"], "unrecognized arguments: seq:1:64:512"),
    (["bench", "stream", "--models", "linear-tiny,nope-tiny"], "expected one of"),
    (["bench", "stream", "--positions", "4,x"], "invalid literal"),
    (["bench", "reassoc", "--lengths", "8,,16"], "no empty item"),
])
def test_list_flags_refuse_the_other_styles_and_bad_items(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_plugins_build_default_arch_is_the_library_default(monkeypatch, tmp_path):
    from attnx.cli import plugins
    from attnx.plugins import build

    seen = {}

    def build_library(archs, **options):
        seen["archs"] = archs
        return tmp_path / "lib.so"

    monkeypatch.setattr(build, "build_library", build_library)
    monkeypatch.setattr(plugins, "log", lambda message: None)
    assert plugins.run_build(build_parser().parse_args(["plugins", "build"])) == 0
    assert list(seen["archs"]) == list(build.DEFAULT_ARCHS)


# ---------------------------------------------------------------- arguments before dependencies

@pytest.mark.parametrize("case", ["missing", "not-onnx", "output-under-a-file", "shapes", "plugins"])
def test_build_checks_its_arguments_before_saying_tensorrt_is_missing(case, exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, installed or not
    _, good = exported("linear-tiny")
    text = tmp_path / "notes.txt"
    text.write_text("not ONNX")
    argv = {"missing": [str(tmp_path / "none.onnx"), "-o", str(tmp_path / "e.engine")],
            "not-onnx": [str(text), "-o", str(tmp_path / "e.engine")],
            "output-under-a-file": [str(good), "-o", str(text / "e.engine")],
            "shapes": [str(good), "-o", str(tmp_path / "e.engine"), "--shapes", "seq:4:2:8"],
            "plugins": [str(good), "-o", str(tmp_path / "e.engine"), "--plugins", str(tmp_path / "no.so")]}[case]
    assert main(["build", *argv]) == 2
    err = capsys.readouterr().err
    assert "attnx build: error:" in err and NO_TENSORRT not in err, err
    # and with every argument right, the missing TensorRT is what it says
    assert main(["build", str(good), "-o", str(tmp_path / "e.engine")]) == 2
    assert NO_TENSORRT in capsys.readouterr().err


def test_plugins_build_checks_the_arch_before_looking_for_cmake(monkeypatch, tmp_path, capsys):
    from attnx.plugins import build

    def no_cmake():
        raise BackendUnavailableError("cmake not found on PATH")

    monkeypatch.setattr(build, "find_cmake", no_cmake)
    assert main(["plugins", "build", "--arch", "70", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "sm_70 is older than the plugins need" in err and "cmake" not in err, err


def test_convert_refuses_a_missing_plugin_library_before_the_work(monkeypatch, tmp_path, capsys):
    from attnx.plugins import engine

    monkeypatch.setattr(engine, "require_tensorrt", lambda: None)  # as where TensorRT is installed
    assert main(["convert", "linear-tiny", "-o", str(tmp_path / "out"), "--plugins", str(tmp_path / "no.so")]) == 2
    assert "no plugin library at" in capsys.readouterr().err
    assert not (tmp_path / "out" / "linear-tiny.onnx").exists()  # refused before the export


# ---------------------------------------------------------------- flags without effect

def test_convert_warns_that_plugins_has_no_effect_without_tensorrt(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    # an unknown model stops convert right after the warning: the warning needs no run
    assert main(["convert", "nope-tiny", "-o", str(tmp_path / "out"), "--plugins", "lib.so"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("attnx convert: warning: --plugins lib.so has no effect: TensorRT is not installed")
    assert "unknown model 'nope-tiny'" in err[-1]


def test_build_warns_of_a_shape_for_an_axis_the_file_lacks(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    _, path = exported("linear-tiny")
    assert main(["build", str(path), "-o", str(tmp_path / "e.engine"), "--shapes", "past:1:8:64,seq:1:64:512"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"attnx build: warning: --shapes past:... has no effect: no input of {path} has a dynamic "
                      "axis 'past'")
    assert len(err) == 2 and NO_TENSORRT in err[1]


# ---------------------------------------------------------------- optional dependencies before the work

def test_bench_stream_plot_without_matplotlib_is_refused_up_front(monkeypatch, tmp_path, capsys):
    import attnx.bench.stream as stream

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(stream, "measure", lambda *a: pytest.fail("the benchmark ran"))
    assert main(["bench", "stream", "--models", "linear-tiny", "--plot", str(tmp_path / "p.png")]) == 2
    out, err = capsys.readouterr()
    assert "--plot needs matplotlib" in err and out == ""


def test_bench_stream_refuses_a_model_that_cannot_stream_before_any_run(monkeypatch, capsys):
    import attnx.bench.stream as stream

    monkeypatch.setattr(stream, "measure", lambda *a: pytest.fail("the benchmark ran"))
    assert main(["bench", "stream", "--models", "linear-tiny,gau-n-tiny"]) == 2
    assert "gau-n-tiny" in capsys.readouterr().err
    assert main(["bench", "stream", "--positions", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
