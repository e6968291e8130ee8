"""`attnx convert`'s opset choice and its printed reasons, and `attnx optimize`'s check of a file holding
standard Attention nodes (exit 0 with a warning where the input itself fails, 1 where the written file
does worse than its input)."""

import json
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import attnx.surgeon.standard_nodes as standard_nodes
from attnx.cli.convert import choose_opset
from attnx.cli.main import main
from attnx.cli.optimize import report_lines
from attnx.errors import AttnxError
from attnx.surgeon.framework import PassReport

MHA_FACTORY = """import torch
def build(batch=2, seq_len=12):
    torch.manual_seed(0)
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        def forward(self, x):
            return self.a(x, x, x, need_weights=False)[0]
    return M().eval(), (torch.randn(batch, seq_len, 16),)
"""


def _loaded(name):
    import torch
    return types.SimpleNamespace(name=name, module=torch.nn.Linear(2, 2))


def test_a_user_model_exports_at_23_where_onnx_runtime_runs_it():
    opset, why = choose_opset(None, _loaded("mine.py:build"))
    assert opset == 23 and "runs opset 23 with Attention and RotaryEmbedding" in why


def test_a_user_model_falls_back_to_18_and_says_why(monkeypatch):
    monkeypatch.setattr(standard_nodes, "ort_opset_support",
                        lambda opset=23: (opset < 23, f"onnxruntime 0.0 does not run opset {opset}"))
    opset, why = choose_opset(None, _loaded("mine.py:build"))
    assert opset == 18 and "does not run opset 23" in why and "left unfused" in why
    with pytest.raises(AttnxError, match="--opset 23: expected an opset the installed ONNX Runtime runs"):
        choose_opset(23, _loaded("mine.py:build"))


def test_a_given_opset_and_a_zoo_models_own_are_said():
    assert choose_opset(18, _loaded("mine.py:build")) == (18, "given with --opset")
    opset, why = choose_opset(None, _loaded("linear-tiny"))
    assert opset == 18 and why.startswith("the zoo model's own")


def test_an_opset_out_of_range_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["convert", "linear-tiny", "--opset", "20", "-o", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "--opset: invalid choice: 20" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_report_lines_give_every_candidates_reason():
    reports = [PassReport("fuse-softmax-attention", 2, 1, [
                   {"at": "MatMul_1", "rewritten": True, "change": "→ Attention"},
                   {"at": "MatMul_7", "rewritten": False, "why": "mask_readable: found a mask of 3 values"}]),
               PassReport("left-alone", 1, 0, [{"at": "Einsum_3", "rewritten": False,
                                                "why": "skeleton: no pass took it"}])]
    assert report_lines(reports) == [
        "fuse-softmax-attention         matched 2, rewritten 1", "  MatMul_1: → Attention",
        "  MatMul_7: left alone: mask_readable: found a mask of 3 values",
        "left-alone                     matched 1, rewritten 0", "  Einsum_3: left alone: skeleton: no pass took it"]


def test_convert_of_a_user_model_says_its_opset_and_prints_optimizes_lines(tmp_path, capsys):
    src = tmp_path / "mha.py"
    src.write_text(MHA_FACTORY)
    out = tmp_path / "out"
    assert main(["convert", f"{src}:build", "-o", str(out), "--seq-len", "1,37"]) == 0
    err = capsys.readouterr().err
    assert "opset 23: onnxruntime" in err and "(fp32, opset 23," in err
    assert "standard nodes in the input (1 Attention): checked in ONNX Runtime (CPU) at batch 1, length 12; " \
           "batch 2, length 12; batch 1, length 37" in err
    # optimize on the same export prints the same pass and candidate lines
    assert main(["optimize", str(out / "mha-build.onnx"), "-o", str(tmp_path / "o.onnx")]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if "matched" in line or line.startswith("  ")]
    assert printed and all(line in err for line in printed)


def _baked_length_model(path, baked=12):
    """x [b, n, 8] → Reshape to the constant [1, baked, 8] → Attention: the length baked in."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["xr"]),
         helper.make_node("Attention", ["xr", "xr", "xr"], ["y"], q_num_heads=2, kv_num_heads=2)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, 8])],
        [numpy_helper.from_array(np.array([1, baked, 8], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    entry = model.metadata_props.add()
    entry.key, entry.value = "attnx.export_seq_len", str(baked)
    onnx.save(model, path)
    return model


def test_optimize_warns_when_the_input_itself_fails_and_exits_0(tmp_path, capsys):
    src, dst, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    _baked_length_model(src)
    assert main(["optimize", str(src), "-o", str(dst), "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    assert "the INPUT itself fails at batch 2, length 12 (the written file fails there too)" in out
    assert "attnx optimize: warning: the INPUT itself fails in ONNX Runtime at batch 2, length 12, " \
           "batch 1, length 37" in err
    assert json.loads(report.read_text())["standard_nodes_check"]["status"] == "input-fails"
    assert dst.exists()


def test_optimize_exits_1_when_the_written_file_does_worse_than_its_input(tmp_path, monkeypatch, capsys):
    import attnx.surgeon.pipeline as pipeline

    src = tmp_path / "in.onnx"
    good = _baked_length_model(src, baked=12)
    # a dynamic input, and a stand-in for the passes that bakes a length in: what the check must catch
    for dim, value in zip(good.graph.input[0].type.tensor_type.shape.dim, ("b", "n")):
        dim.dim_param = value
    good.graph.node[0].CopyFrom(helper.make_node("Identity", ["x"], ["xr"]))
    onnx.save(good, src)
    bad = _baked_length_model(tmp_path / "bad.onnx", baked=12)
    monkeypatch.setattr(pipeline, "optimize_model", lambda model, target, passes=None: (bad, []))
    assert main(["optimize", str(src), "-o", str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err
    assert "the written file fails or differs where its input runs" in err
