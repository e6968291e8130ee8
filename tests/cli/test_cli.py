"""The command line end to end, as a user runs it."""

import json
import subprocess
import sys


from attnx.cli.main import main


def run(*args):
    """attnx in a subprocess, as installed: (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "attnx.cli", *args], capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_zoo_json_lists_the_models(capsys):
    assert main(["zoo", "--json"]) == 0
    names = [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert names == ["softmax-tiny", "softmax-sqrtd-tiny", "linear-tiny", "performer-tiny", "gau-tiny", "gau-n-tiny",
                     "gau-fixed-tiny", "gau-softmax-tiny", "flash-tiny", "local-tiny", "dilated-tiny", "strided-tiny",
                     "transnormer-tiny", "vit-rope2d-tiny", "gau-n-trained", "gau-fixed-trained", "gau-softmax-trained",
                     "softmax-sqrtd-trained", "softmax-trained", "linear-trained", "flash-trained"]


def test_export_then_check_with_json(tmp_path):
    onnx_path, report_path = tmp_path / "m.onnx", tmp_path / "r.json"
    code, _, err = run("export", "linear-tiny", "-o", str(onnx_path))
    assert code == 0, err
    assert "2 attnx node(s): LinearAttention" in err and "done in" in err
    code, out, err = run("check", str(onnx_path), "--model", "linear-tiny", "--seq-len", "1", "--seq-len", "37",
                         "--seq-len", "300", "--json", str(report_path))
    assert code == 0, out + err
    assert "PASSED: 3 of 3" in out and out.count("✓") == 3
    report = json.loads(report_path.read_text())
    assert report["passed"] is True and report["backend"] == "onnxruntime-cpu"
    assert report["inputs"] == {"input_ids": ["batch", "seq"]}
    assert [o["seq_len"] for o in report["outputs"]] == [1, 37, 300]
    for o in report["outputs"]:
        assert set(o) >= {"name", "max_abs_err", "max_rel_err", "atol", "rtol", "passed"}
        assert o["max_abs_err"] <= o["atol"]


def test_convert_defaults_to_linear_tiny_and_passes(tmp_path):
    code, out, err = run("convert", "-o", str(tmp_path / "out"))
    assert code == 0, out + err
    assert "[1/3] export linear-tiny" in err and "[2/3] optimize" in err and "[3/3] check" in err
    assert "engine check not run: TensorRT is not installed here" in err  # this machine has no TensorRT
    assert "PASSED" in out
    assert (tmp_path / "out" / "linear-tiny.optimized.onnx").exists()
    report = json.loads((tmp_path / "out" / "linear-tiny.parity.json").read_text())
    assert report["passed"] and report["onnx"].endswith("linear-tiny.optimized.onnx")


def test_convert_names_its_files_after_a_factory_reference(tmp_path, capsys):
    src = tmp_path / "mine.py"
    src.write_text("import torch\nfrom attnx.models import LinearAttention\n"
                   "def build():\n    return LinearAttention(16, 2, causal=True), (torch.randn(2, 9, 16),)\n")
    assert main(["convert", f"{src}:build", "-o", str(tmp_path / "out"), "--seq-len", "1", "--seq-len", "70"]) == 0
    assert (tmp_path / "out" / "mine-build.onnx").exists() and (tmp_path / "out" / "mine-build.parity.json").exists()
    # the factory is unseeded: a second load has other weights, and check says so instead of comparing
    assert main(["check", str(tmp_path / "out" / "mine-build.onnx"), "--model", f"{src}:build"]) == 2
    assert "was exported from other weights" in capsys.readouterr().err


def test_check_takes_the_model_name_from_the_file(tmp_path, capsys):
    path = tmp_path / "s.onnx"
    assert main(["export", "softmax-tiny", "-o", str(path), "--opset", "23"]) == 0
    assert main(["check", str(path), "--seq-len", "5", "--seed", "7"]) == 0
    assert "softmax-tiny, fp32, seed 7" in capsys.readouterr().out


def test_unknown_model_name_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "gpt-huge", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'gpt-huge'" in err and "softmax-tiny, softmax-sqrtd-tiny, linear-tiny" in err and "path/file.py:factory" in err


def test_malformed_onnx_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff\x13")
    assert main(["check", str(bad), "--model", "linear-tiny"]) == 2
    err = capsys.readouterr().err
    assert "bad.onnx is not a readable ONNX model: expected a serialized ModelProto" in err
    assert main(["check", str(tmp_path / "missing.onnx"), "--model", "linear-tiny"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_wrong_rank_input_is_a_clear_error(tmp_path, capsys, exported):
    """A file whose input rank differs from the model's: said plainly, not a runtime crash."""
    _, path = exported("linear-tiny")
    src = tmp_path / "rank3.py"
    src.write_text("import torch\nfrom attnx.models import LinearAttention\n"
                   "def build():\n    return LinearAttention(16, 2), (torch.randn(2, 9, 16),)\n")
    # --force: past the refusal of a --model other than the file's recorded linear-tiny
    assert main(["check", str(path), "--model", f"{src}:build", "--force"]) == 2
    err = capsys.readouterr().err
    assert "input 'input_ids': the ONNX file expects rank 2 ['batch', 'seq'], the model" in err
    assert "takes rank 3 [2, 9, 16]" in err


def test_build_without_tensorrt_says_so(tmp_path, capsys, exported, monkeypatch):
    """No TensorRT here (a None entry in sys.modules makes `import tensorrt` fail even where it is installed)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    _, path = exported("linear-tiny")
    assert main(["build", str(path), "-o", str(tmp_path / "x.engine")]) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed here" in err and not (tmp_path / "x.engine").exists()


def test_check_backend_trt_without_tensorrt_says_so(capsys, exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    _, path = exported("linear-tiny")
    assert main(["check", str(path), "--backend", "trt"]) == 2
    assert "TensorRT is not installed here" in capsys.readouterr().err


def test_check_stream_with_backend_trt_is_refused(capsys):
    assert main(["check", "--mode", "stream", "--model", "linear-tiny", "--backend", "trt"]) == 2
    assert "runs in ONNX Runtime only" in capsys.readouterr().err


def test_plugins_path_prints_the_given_library(tmp_path, capsys):
    lib = tmp_path / "libx.so"
    lib.write_bytes(b"")
    assert main(["plugins", "path", "--lib", str(lib)]) == 0
    assert capsys.readouterr().out.strip() == str(lib)
