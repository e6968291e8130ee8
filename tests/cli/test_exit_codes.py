"""The exit-code contract and the bad-input corpus: every bad input is exit 2 with one line saying what
was expected and what was found, a crash is exit 3 with one line (the traceback only with --debug or
ATTNX_DEBUG=1), an interrupt is 130, a closed stdout 141, and no traceback reaches the user.

0 passed, 1 parity failed, 2 bad input or usage, 3 internal error, 130 interrupted, 141 stdout closed.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from attnx.check.report import OutputResult, ParityReport
from attnx.cli.main import main

TIMEOUT = 120  # seconds a subprocess may run: a few imports and at most one tiny export


def attnx_process(*args, env=None, **popen):
    """`python -m attnx.cli ARGS` started in a subprocess."""
    return subprocess.Popen([sys.executable, "-m", "attnx.cli", *args], env={**os.environ, **(env or {})},
                            text=True, **popen)


def one_error_line(err: str, *words: str, code_word: str = "error:") -> str:
    """The last stderr line, which must be the error; no traceback anywhere; every word in it."""
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("attnx ") and code_word in line, err
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line


def bad_input(capsys, argv, *words):
    """main(argv) exits 2 with one error line holding `words`."""
    assert main([str(a) for a in argv]) == 2
    return one_error_line(capsys.readouterr().err, *words)


def usage_error(capsys, argv, *words):
    """argparse refuses argv: exit 2, its one-line error holding `words`."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    return one_error_line(capsys.readouterr().err, *words)


def save_graph(path, nodes, *, opset=18, inputs=None, initializers=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph(nodes, "g", [x] if inputs is None else inputs, [y], initializer=list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def write_factory(tmp_path, body: str, name="factory.py"):
    path = tmp_path / name
    path.write_text("import torch\nfrom torch import nn\n" + body)
    return f"{path}:build"


# --- malformed and adversarial ONNX: optimize and check both refuse, naming what is wrong

def _cycle(tmp_path):
    return save_graph(tmp_path / "cycle.onnx", [helper.make_node("Relu", ["y"], ["a"], name="r1"),
                                                helper.make_node("Relu", ["a"], ["y"], name="r2")])


def _duplicate_names(tmp_path):
    return save_graph(tmp_path / "dup.onnx", [helper.make_node("Relu", ["x"], ["y"]),
                                              helper.make_node("Neg", ["x"], ["y"])])


def _non_utf8_attribute(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    node.attribute.append(onnx.AttributeProto(name="note", type=onnx.AttributeProto.STRING, s=b"\xff\xfe"))
    return save_graph(tmp_path / "utf8.onnx", [node])


def _old_opset(tmp_path):
    return save_graph(tmp_path / "op9.onnx", [helper.make_node("Relu", ["x"], ["y"])], opset=9)


def _empty(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    return tmp_path / "empty.onnx"


def _folder(tmp_path):
    (tmp_path / "folder.onnx").mkdir()
    return tmp_path / "folder.onnx"


def _garbage(tmp_path):
    (tmp_path / "garbage.onnx").write_bytes(b"\x0a\xff\xff\xff\xff\x0f not a protobuf")
    return tmp_path / "garbage.onnx"


def _undefined_tensor(tmp_path):
    return save_graph(tmp_path / "undefined.onnx", [helper.make_node("Add", ["x", "ghost"], ["y"], name="add")])


def _future_opset(tmp_path):
    return save_graph(tmp_path / "op99.onnx", [helper.make_node("Relu", ["x"], ["y"])], opset=99)


def _external_data_outside_the_folder(tmp_path):
    weight = onnx.numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../../etc/passwd")
    return save_graph(tmp_path / "traverse.onnx", [helper.make_node("Add", ["x", "w"], ["y"])], initializers=[weight])


MALFORMED = {
    "cycle": (_cycle, ["expected an acyclic graph, found a cycle through node(s) 'r1', 'r2'"]),
    "duplicate tensor names": (_duplicate_names, ["expected each tensor name defined once, found 'y'"]),
    "non-UTF-8 attribute": (_non_utf8_attribute, ["expected UTF-8 text", "node 'r' attribute 'note'"]),
    "opset 9": (_old_opset, ["expected default opset 18 or later", "found opset 9"]),
    "empty file": (_empty, ["is empty (0 bytes)", "expected a serialized ONNX ModelProto"]),
    "a directory": (_folder, ["expected an ONNX file", "is a directory"]),
    "garbage": (_garbage, ["is not a readable ONNX model: expected a serialized ModelProto"]),
    "undefined tensor": (_undefined_tensor, ["expected every tensor a node reads to be defined, found 'ghost'",
                                             "node 'add'"]),
    "opset 99": (_future_opset, ["expected a default opset ONNX defines", "found opset 99"]),
    "external data outside its folder": (_external_data_outside_the_folder, ["points outside the directory"]),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_optimize_refuses_a_malformed_file(tmp_path, capsys, case):
    make, words = MALFORMED[case]
    path = make(tmp_path)
    line = bad_input(capsys, ["optimize", path, "-o", tmp_path / "out.onnx"], *words)
    assert "no default ONNX opset" not in line and "does not exist" not in line
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("case", MALFORMED)
def test_check_refuses_a_malformed_file(tmp_path, capsys, case):
    make, words = MALFORMED[case]
    bad_input(capsys, ["check", make(tmp_path), "--model", "linear-tiny"], *words)


def test_check_refuses_a_trt_form_file_on_onnx_runtime(tmp_path, capsys, exported):
    _, path = exported("linear-tiny")
    trt = tmp_path / "trt.onnx"
    assert main(["optimize", str(path), "-o", str(trt), "--target", "trt"]) == 0
    capsys.readouterr()
    bad_input(capsys, ["check", trt, "--model", "linear-tiny"],
              "expected a file ONNX Runtime runs", "found the TensorRT form", "trt.plugins", "--backend trt")


def test_check_refuses_a_file_whose_input_dtype_is_not_the_models(tmp_path, capsys):
    path = save_graph(tmp_path / "f.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                      inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])])
    # the ids are int64, the file takes float32
    bad_input(capsys, ["check", path, "--model", "linear-tiny"], "expects float32", "takes int64")


# --- bad factories

FACTORIES = {
    "syntax error": ("def build(:\n", ["importing it raises SyntaxError"]),
    "raises": ("def build():\n    raise RuntimeError('no weights here')\n",
               ["expected the factory to return (module, example_inputs)", "RuntimeError: no weights here"]),
    "returns a dict": ("def build():\n    return {'module': nn.Linear(2, 2)}\n",
                       ["expected the factory to return (module, example_inputs), found a dict"]),
    "returns three things": ("def build():\n    return nn.Linear(2, 2), torch.ones(2, 2), 3\n",
                             ["found a tuple of 3"]),
    "module is not a module": ("def build():\n    return 'linear', (torch.ones(2, 2),)\n",
                               ["expected a torch.nn.Module", "found a str"]),
    "inputs are not tensors": ("def build():\n    return nn.Linear(2, 2), [1, 2]\n",
                               ["expected example_inputs to be a tensor or a tuple of tensors",
                                "found a sequence holding int"]),
    "no inputs": ("def build():\n    return nn.Linear(2, 2), ()\n", ["found an empty sequence"]),
}


@pytest.mark.parametrize("case", FACTORIES)
def test_a_bad_factory_is_a_clear_error(tmp_path, capsys, case):
    body, words = FACTORIES[case]
    bad_input(capsys, ["export", write_factory(tmp_path, body), "-o", tmp_path / "x.onnx"], *words)
    assert not (tmp_path / "x.onnx").exists()


POSITIONAL = """
class PosLM(nn.Module):
    vocab_size = 50

    def __init__(self):
        super().__init__()
        self.tok, self.pos, self.head = nn.Embedding(50, 16), nn.Embedding(40, 16), nn.Linear(16, 50)

    def forward(self, input_ids):
        return self.head(self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1])))


def build():
    torch.manual_seed(0)
    return PosLM(), (torch.randint(0, 50, (2, 9)),)
"""

REFUSES_FLOAT64 = """
class Float32Only(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 16)

    def forward(self, x):
        if x.dtype == torch.float64:
            raise TypeError("this model runs in float32 only")
        return self.lin(x)


def build():
    torch.manual_seed(0)
    return Float32Only(), (torch.randn(2, 9, 16),)
"""


def test_a_sequence_longer_than_the_positional_table_is_bad_input(tmp_path, capsys):
    ref = write_factory(tmp_path, POSITIONAL)
    assert main(["export", ref, "-o", str(tmp_path / "pos.onnx")]) == 0
    capsys.readouterr()
    bad_input(capsys, ["check", tmp_path / "pos.onnx", "--model", ref, "--seq-len", "300"],
              "expected inputs the eager model accepts", "input_ids [2, 300]", "IndexError")
    assert main(["check", str(tmp_path / "pos.onnx"), "--model", ref, "--seq-len", "40"]) == 0  # within the table


def test_the_eager_model_raising_is_bad_input(tmp_path, capsys):
    ref = write_factory(tmp_path, REFUSES_FLOAT64)
    assert main(["export", ref, "-o", str(tmp_path / "f.onnx")]) == 0
    capsys.readouterr()
    bad_input(capsys, ["check", tmp_path / "f.onnx", "--model", ref, "--seq-len", "5"],
              "expected inputs the eager model accepts", "x [2, 5, 16]", "TypeError: this model runs in float32 only")


# --- counts and seeds that make no sense: argparse refuses them

@pytest.mark.parametrize("argv, words", [
    (["generate", "--prompt-len", "0"], ["--prompt-len", "expected an integer >= 1, found 0"]),
    (["generate", "--new-tokens", "-1"], ["--new-tokens", "expected an integer >= 1, found -1"]),
    (["check", "f.onnx", "--seq-len", "0"], ["--seq-len", "expected an integer >= 1, found 0"]),
    (["check", "f.onnx", "--batch", "0"], ["--batch", "expected an integer >= 1, found 0"]),
    (["check", "--mode", "stream", "--new-tokens", "0"], ["--new-tokens", "found 0"]),
    (["check", "f.onnx", "--seed", "-1"], ["--seed", "expected an integer seed in [0, 2**63), found -1"]),
    (["convert", "--seed", "two"], ["--seed", "found 'two'"]),
    (["export", "linear-tiny", "-o", "x.onnx", "--seq-len", "1"], ["--seq-len", "expected an integer >= 2, found 1"]),
    (["export", "linear-tiny", "-o", "x.onnx", "--batch", "x"], ["--batch", "expected an integer >= 2, found 'x'"]),
])
def test_a_count_below_its_minimum_is_a_usage_error(capsys, argv, words):
    usage_error(capsys, argv, *words)


# --- bad paths

def test_output_paths_that_cannot_be_written_are_refused_before_the_work(tmp_path, capsys):
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "a-file").write_text("")
    bad_input(capsys, ["export", "linear-tiny", "-o", tmp_path / "folder.onnx"], "expected a file to write",
              "found a folder")
    bad_input(capsys, ["plugins", "build", "--out", tmp_path / "a-file"], "expected a folder", "found a file")
    bad_input(capsys, ["convert", "-o", tmp_path / "a-file"], "expected a folder", "found a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        bad_input(capsys, ["export", "linear-tiny", "-o", folder / "x.onnx"], "read-only")
    finally:
        folder.chmod(0o700)


def test_plugins_info_on_an_unrelated_shared_library(capsys):
    import _ctypes

    bad_input(capsys, ["plugins", "info", "--lib", _ctypes.__file__], "expected the attnx plugin library",
              "does not export attnx_describe_creators")


# --- internal errors: 3, one line, the traceback only on request

def _crash(args):
    raise RuntimeError("an attnx bug\nover two lines")


def test_an_internal_error_is_exit_3_on_one_line(capsys, monkeypatch):
    monkeypatch.setattr("attnx.cli.zoo.run", _crash)
    monkeypatch.delenv("ATTNX_DEBUG", raising=False)
    assert main(["zoo"]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    one_error_line(err, "attnx zoo: internal error in _crash (", "RuntimeError: an attnx bug over two lines",
                   "run with --debug or ATTNX_DEBUG=1 for the traceback", code_word="internal error")


@pytest.mark.parametrize("how", ["--debug", "ATTNX_DEBUG=1"])
def test_debug_shows_the_traceback_and_keeps_exit_3(capsys, monkeypatch, how):
    monkeypatch.setattr("attnx.cli.zoo.run", _crash)
    if how == "--debug":
        code = main(["--debug", "zoo"])
    else:
        monkeypatch.setenv("ATTNX_DEBUG", "1")
        code = main(["zoo"])
    err = capsys.readouterr().err
    assert code == 3
    assert "Traceback (most recent call last)" in err and "RuntimeError: an attnx bug" in err


def test_onnx_runtime_out_of_memory_is_exit_3_not_a_parity_failure(capsys, monkeypatch, exported):
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    def out_of_memory(*args, **kwargs):
        raise RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory "
                               "for requested buffer of size 1073741824")

    _, path = exported("linear-tiny")
    monkeypatch.setattr(onnxruntime, "InferenceSession", out_of_memory)
    assert main(["check", str(path), "--model", "linear-tiny", "--seq-len", "5"]) == 3
    one_error_line(capsys.readouterr().err, "attnx check: internal error in", "Failed to allocate memory",
                   "--debug or ATTNX_DEBUG=1", code_word="internal error")


def test_debug_through_the_command_line_in_a_subprocess(tmp_path):
    code = ("import sys, attnx.cli.zoo as zoo\n"
            "def crash(args):\n    raise ZeroDivisionError('in a step')\n"
            "zoo.run = crash\n"
            "from attnx.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    for argv, traceback in ((["zoo"], False), (["--debug", "zoo"], True)):
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=TIMEOUT,
                              env={k: v for k, v in os.environ.items() if k != "ATTNX_DEBUG"})
        assert proc.returncode == 3, proc.stderr
        assert ("Traceback" in proc.stderr) is traceback, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("attnx zoo: internal error in crash")


# --- signals and pipes, in a subprocess as a user meets them

def test_ctrl_c_during_export_is_130_with_one_line(tmp_path):
    proc = attnx_process("export", "linear-tiny", "-o", str(tmp_path / "x.onnx"), stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL)
    try:
        seen = []
        for line in proc.stderr:  # the step's title is printed when the export starts
            seen.append(line)
            if "export linear-tiny" in line:
                break
        time.sleep(1.0)  # inside torch.export
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
    err = "".join(seen) + rest
    assert code == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "attnx export: interrupted"
    assert not (tmp_path / "x.onnx").exists()


def test_a_closed_stdout_pipe_exits_141_without_a_traceback():
    proc = attnx_process("zoo", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before attnx writes (`| head -c0`)
    try:
        err = proc.stderr.read()
        code = proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert code == 141, err
    assert err == "", err


# --- determinism and strict reports

def test_check_draws_the_same_inputs_on_every_run(tmp_path, capsys, exported):
    _, path = exported("linear-tiny")
    reports = []
    for i in range(2):
        assert main(["check", str(path), "--model", "linear-tiny", "--seq-len", "7", "--json",
                     str(tmp_path / f"r{i}.json")]) == 0
        assert "seed 0)" in capsys.readouterr().out  # the documented default seed, printed
        reports.append(json.loads((tmp_path / f"r{i}.json").read_text()))
    assert reports[0]["seed"] == 0 and reports[0]["outputs"] == reports[1]["outputs"]
    assert main(["check", str(path), "--model", "linear-tiny", "--seq-len", "7", "--seed", "5"]) == 0
    assert "seed 5)" in capsys.readouterr().out


def _refuse_constant(name):
    raise ValueError(f"non-strict JSON constant {name}")


def test_a_report_with_nan_is_strict_json_with_a_flag(tmp_path):
    outputs = [OutputResult("logits", 5, [2, 5, 256], math.nan, math.inf, 1e-4, 1e-3, False),
               OutputResult("logits", 7, [2, 7, 256], 1e-6, 2e-6, 1e-4, 1e-3, True)]
    report = ParityReport("linear-tiny", "m.onnx", "onnxruntime-cpu", "eager-float64", "fp32", 0,
                          {"input_ids": ["batch", "seq"]}, outputs)
    report.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=_refuse_constant)
    assert data["non_finite_as_null"] is True and data["passed"] is False
    assert [o["max_abs_err"] for o in data["outputs"]] == [None, 1e-6]
    assert data["outputs"][0]["max_rel_err"] is None
    finite = ParityReport(*[getattr(report, f) for f in ("model", "onnx_path", "backend", "reference", "dtype",
                                                         "seed", "inputs")], outputs[1:])
    finite.write_json(tmp_path / "f.json")
    assert "non_finite_as_null" not in json.loads((tmp_path / "f.json").read_text())


def test_generate_refuses_counts_below_one_when_called_as_a_library(tmp_path):
    from attnx.errors import InputError
    from attnx.generate import generate
    from attnx.models import load_model

    with pytest.raises(InputError, match="expected prompt_len and new_tokens >= 1, found prompt_len 0"):
        generate(load_model("linear-tiny"), tmp_path, prompt_len=0)
    assert not list(tmp_path.iterdir())  # refused before the export
