"""`attnx check` in Polygraphy's terms: saved and loaded inputs and golden outputs (Polygraphy's JSON
formats), tolerances and the error statistic per output, NaN/Inf failing fast, input shapes by name,
-q, the deciding-error column, the --plugins warning, and bad inputs (exit 2, nothing written).

Expected values are computed here with numpy from the saved outputs (Polygraphy's RunResults), never
taken from the report under test."""

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from polygraphy.comparator import RunResults
from polygraphy.json import load_json

import attnx.models
import attnx.models.zoo
from attnx.cli.main import main

SEQ = "1,37"  # one token, and a length that is not a multiple of the chunk (64)


@pytest.fixture(scope="module")
def golden(tmp_path_factory, exported):
    """linear-tiny exported once; one run saves its inputs, outputs and report."""
    _, path = exported("linear-tiny")
    out = tmp_path_factory.mktemp("golden")
    files = {"inputs": out / "in.json", "outputs": out / "golden.json", "report": out / "r.json"}
    assert main(["check", str(path), "--seq-len", SEQ, "--save-inputs", str(files["inputs"]),
                 "--save-outputs", str(files["outputs"]), "--json", str(files["report"])]) == 0
    return path, files


def _copy(src, dst, change=None):
    model = onnx.load(src)
    if change:
        change(model)
    onnx.save(model, dst)
    return dst


def _perturb(model):
    """One weight of the largest MatMul initializer (the output head) moved by 1e-2: a shift of the whole
    matrix would vanish after LayerNorm's zero mean. The recorded fingerprint stays: only the numbers change."""
    matmul_inputs = {name for node in model.graph.node if node.op_type in ("MatMul", "Gemm") for name in node.input}
    init = max((i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.name in matmul_inputs),
               key=lambda i: numpy_helper.to_array(i).size)
    array = numpy_helper.to_array(init).copy()
    array.flat[0] += np.float32(1e-2)
    init.CopyFrom(numpy_helper.from_array(array, init.name))


def _no_model(monkeypatch):
    """Loading any model fails the test: the golden flow needs no model code."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(attnx.models, "load_model", refuse)
    monkeypatch.setattr(attnx.models.zoo, "load_model", refuse)


def _golden_args(path, files, *extra):
    return ["check", str(path), "--load-inputs", str(files["inputs"]), "--load-outputs", str(files["outputs"]), *extra]


def test_saved_files_are_polygraphys_formats(golden):
    path, files = golden
    feeds = load_json(files["inputs"])
    assert [list(f) for f in feeds] == [["input_ids"], ["input_ids"]]
    assert [f["input_ids"].shape for f in feeds] == [(2, 1), (2, 37)]
    results = RunResults.load(files["outputs"])
    assert list(results.keys()) == ["onnxruntime-cpu", "eager-float64"]
    assert results["eager-float64"][1]["logits"].dtype == np.float64
    record = json.loads(files["outputs"].read_text())["attnx"]
    assert record["model"]["attnx.model"] == "linear-tiny" and record["reference"] == "eager-float64"


def test_golden_round_trip_passes_without_the_model(golden, tmp_path, monkeypatch, capsys):
    path, files = golden
    other = _copy(path, tmp_path / "other.onnx")  # another machine's copy of the file
    _no_model(monkeypatch)
    assert main(_golden_args(other, files, "--json", str(tmp_path / "r.json"))) == 0
    out, err = capsys.readouterr()
    assert "reference: runner eager-float64" in err and "PASSED: 2 of 2" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["reference"].startswith("eager-float64") and [o["seq_len"] for o in report["outputs"]] == [1, 37]


def test_a_perturbed_file_fails_against_the_golden_outputs(golden, tmp_path, monkeypatch, capsys):
    path, files = golden
    bad = _copy(path, tmp_path / "bad.onnx", _perturb)
    _no_model(monkeypatch)
    assert main(_golden_args(bad, files)) == 1
    assert "FAILED" in capsys.readouterr().out


def test_the_reference_runner_can_be_chosen_and_must_exist(golden, capsys):
    path, files = golden
    assert main(_golden_args(path, files, "--reference-runner", "onnxruntime-cpu")) == 0
    assert "vs onnxruntime-cpu (" in capsys.readouterr().out
    assert main(_golden_args(path, files, "--reference-runner", "trt")) == 2
    assert "expected one of the runners" in capsys.readouterr().err


def test_golden_outputs_of_another_model_or_other_inputs_are_refused(golden, tmp_path, exported, capsys):
    path, files = golden
    _, softmax = exported("softmax-tiny", opset=23)
    assert main(_golden_args(softmax, files)) == 2
    assert "holds outputs of model 'linear-tiny', but" in capsys.readouterr().err
    feeds = load_json(files["inputs"])
    feeds[0]["input_ids"] = (feeds[0]["input_ids"] + 1) % 256
    other_inputs = tmp_path / "in2.json"
    from polygraphy.json import save_json
    save_json(feeds, str(other_inputs))
    assert main(["check", str(path), "--load-inputs", str(other_inputs), "--load-outputs", str(files["outputs"])]) == 2
    assert "outputs for other inputs" in capsys.readouterr().err


def test_load_outputs_needs_load_inputs(golden, capsys):
    path, files = golden
    assert main(["check", str(path), "--load-outputs", str(files["outputs"])]) == 2
    assert "--load-outputs needs --load-inputs" in capsys.readouterr().err


def test_load_inputs_runs_the_eager_model_on_them(golden, capsys):
    path, files = golden
    assert main(["check", str(path), "--load-inputs", str(files["inputs"])]) == 0
    assert "PASSED: 2 of 2" in capsys.readouterr().out


def _errors(files, seq_index):
    results = RunResults.load(files["outputs"])
    got = results["onnxruntime-cpu"][seq_index]["logits"].astype(np.float64)
    ref = results["eager-float64"][seq_index]["logits"]
    return got, ref


def test_the_deciding_error_column_is_the_worst_element_beyond_its_bound(golden):
    _, files = golden
    report = json.loads(files["report"].read_text())
    for index, row in enumerate(report["outputs"]):
        got, ref = _errors(files, index)
        expected = np.max(np.abs(got - ref) - np.maximum(row["atol"], row["rtol"] * np.abs(ref)))
        assert row["stat"] == "elemwise" and row["passed"] and row["excess"] <= 0
        assert row["excess"] == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_per_output_tolerance_and_error_statistic(golden, tmp_path, capsys):
    path, files = golden
    got, ref = _errors(files, 1)
    diff = np.abs(got - ref)
    middle = np.sort(diff.ravel())[[(diff.size - 1) // 2, diff.size // 2]]  # the median lies between these
    median, worst = float(middle.mean()), float(diff.max())
    assert middle[1] < worst
    atol = (float(middle[1]) + worst) / 2  # the median error is within it, the worst element is not
    base = ["check", str(path), "--load-inputs", str(files["inputs"]), "--rtol", "0", "--json", str(tmp_path / "r.json")]
    assert main([*base, "--atol", f"logits:{atol!r}", "--check-error-stat", "logits:median"]) == 0
    row = json.loads((tmp_path / "r.json").read_text())["outputs"][1]  # seq 37
    assert (row["atol"], row["rtol"], row["stat"]) == (atol, 0.0, "median") and row["excess"] <= 0
    assert middle[0] - atol - 1e-15 <= row["excess"] <= middle[1] - atol + 1e-15
    assert main([*base, "--atol", f"{atol!r}", "--check-error-stat", "max"]) == 1
    row = json.loads((tmp_path / "r.json").read_text())["outputs"][1]
    assert row["stat"] == "max" and not row["passed"] and row["excess"] == pytest.approx(worst - atol, rel=1e-6)
    assert main([*base, "--atol", f"{atol!r}"]) == 1  # elemwise: the worst element decides
    capsys.readouterr()
    assert main([*base, "--atol", "nologits:1e-3"]) == 2
    assert "--atol names output(s) 'nologits': expected outputs of the file (logits)" in capsys.readouterr().err


def test_a_non_finite_output_fails_fast_saying_where(golden, tmp_path, capsys):
    path, _ = golden

    def divide_by_zero(model):
        out = model.graph.output[0]
        for node in model.graph.node:
            node.output[:] = [f"{o}_raw" if o == out.name else o for o in node.output]
        model.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
        model.graph.node.append(helper.make_node("Div", [f"{out.name}_raw", "zero"], [out.name]))

    nan_file = _copy(path, tmp_path / "nan.onnx", divide_by_zero)
    report = tmp_path / "r.json"
    assert main(["check", str(nan_file), "--seq-len", "3", "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "onnxruntime-cpu: output 'logits' at seq 3 [2, 3, 256] has 1536 of 1536 values not finite" in out
    assert "nothing was compared" in out
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["outputs"] == []
    assert data["non_finite"][0]["nan"] + data["non_finite"][0]["inf"] == 1536


def test_input_shapes_by_name(golden, tmp_path, capsys):
    path, _ = golden
    report = tmp_path / "r.json"
    assert main(["check", str(path), "--input-shapes", "input_ids:[3,5]", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["outputs"]
    assert [(r["shape"], r["seq_len"]) for r in rows] == [([3, 5, 256], 5)]
    capsys.readouterr()
    assert main(["check", str(path), "--input-shapes", "ids:[3,5]"]) == 2
    assert "names input 'ids': expected an input of" in capsys.readouterr().err
    assert main(["check", str(path), "--input-shapes", "input_ids:[3,5,1]"]) == 2
    assert "expected rank 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # a usage error: argparse's exit 2
        main(["check", str(path), "--input-shapes", "input_ids:3x5"])
    assert usage.value.code == 2 and "expected NAME:[D0,D1,...]" in capsys.readouterr().err


def test_quiet_prints_only_the_verdict(golden, capsys):
    path, _ = golden
    assert main(["check", str(path), "--seq-len", "3", "-q"]) == 0
    out, err = capsys.readouterr()
    assert out == "PASSED: 1 of 1 outputs within tolerance\n" and err == ""


def test_verbose_shows_polygraphys_details_on_stderr(golden, capsys):
    path, _ = golden
    assert main(["check", str(path), "--seq-len", "3", "-v"]) == 0
    out, err = capsys.readouterr()
    assert "Error Metrics: logits" in err and "Error Metrics" not in out


def test_plugins_without_tensorrt_warns_that_it_is_ignored(golden, capsys):
    path, _ = golden
    assert main(["check", str(path), "--seq-len", "3", "--plugins", "lib.so"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["attnx check: warning: --plugins lib.so is ignored: only --backend trt or --providers "
                        "with tensorrt load a plugin library"]


@pytest.mark.parametrize("case", ["not json", "a dict of numbers", "wrong input name"])
def test_bad_inputs_files_are_exit_2_and_leave_nothing(golden, tmp_path, capsys, case):
    path, _ = golden
    bad = tmp_path / "in.json"
    if case == "not json":
        bad.write_text("[{\"input_ids\": ")
        words = "does not decode"
    elif case == "a dict of numbers":
        bad.write_text("[1, 2]")
        words = "expected a list of feed dicts"
    else:
        from polygraphy.json import save_json
        save_json([{"ids": np.zeros((2, 3), np.int64)}], str(bad))
        words = "expected the inputs"
    outputs = [tmp_path / "out.json", tmp_path / "r.json"]
    assert main(["check", str(path), "--load-inputs", str(bad), "--save-outputs", str(outputs[0]),
                 "--json", str(outputs[1])]) == 2
    assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]


def test_a_malformed_golden_file_is_exit_2(golden, tmp_path, capsys):
    path, files = golden
    bad = tmp_path / "golden.json"
    bad.write_text(json.dumps({"lst": 3, "polygraphy_class": "RunResults"}))
    assert main(["check", str(path), "--load-inputs", str(files["inputs"]), "--load-outputs", str(bad)]) == 2
    assert "--load-outputs" in capsys.readouterr().err
