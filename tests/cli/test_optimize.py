"""`attnx optimize`: the file written, the JSON report, and errors that say what was expected."""

import argparse
import json

import onnx
import pytest

from attnx.errors import OnnxFileError
from attnx.cli.optimize import add_parser
from attnx.surgeon.pipeline import PASSES
from helpers.graphs import QKV, QKV_AXES, export
from helpers.attention_models import EinsumLinearAttention, SoftmaxBetweenProducts


def optimize(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["optimize", *argv])
    return args.run(args)


def test_report_counts_passes_and_flops(tmp_path):
    src, dst, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(export(EinsumLinearAttention(), QKV, QKV_AXES), src)
    assert optimize([str(src), "-o", str(dst), "--target", "trt", "--report", str(report),
                     "--flops-seq-len", "1024"]) == 0
    data = json.loads(report.read_text())
    assert [p["name"] for p in data["passes"]] == list(PASSES)
    assert all(set(p) == {"name", "matched", "rewritten", "details"} for p in data["passes"])
    # before: two [1024 × 1024 × 8] products per head; after: [8 × 8] states, linear in N
    n, d, h = 1024, 8, 2
    assert data["flops_before"] == 2 * (2 * h * n * n * d)
    assert data["flops_after"] < data["flops_before"] / 50
    assert onnx.load(dst).graph.node[0].domain == "trt.plugins"


def test_left_alone_match_is_reported(tmp_path, capsys):
    src = tmp_path / "in.onnx"
    onnx.save(export(SoftmaxBetweenProducts(), QKV, QKV_AXES), src)
    assert optimize([str(src), "-o", str(tmp_path / "out.onnx"), "--passes", "reassociate"]) == 0
    assert "left alone: softmax_free" in capsys.readouterr().out


def test_malformed_and_missing_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(OnnxFileError, match="not a readable ONNX model"):
        optimize([str(bad), "-o", str(tmp_path / "out.onnx")])
    with pytest.raises(OnnxFileError, match="expected an ONNX file"):
        optimize([str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "out.onnx")])


def _ops(path):
    return {n.op_type for n in onnx.load(path).graph.node}


def test_trt_10_3_lowers_attention_and_rotary_with_the_same_outputs(tmp_path, rng, capsys):
    """The issue's "done when": --target trt --trt-version 10.3 leaves no Attention or RotaryEmbedding
    node, and ONNX Runtime's outputs equal the plain export's (tolerances: helpers.graphs)."""
    from helpers.attention_models import RotaryAttention
    from helpers.graphs import assert_same_outputs

    src, dst, kept = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "kept.onnx"
    model = export(RotaryAttention(), QKV, QKV_AXES, opset=23)
    onnx.save(model, src)
    assert optimize([str(src), "-o", str(kept), "--target", "trt", "--trt-version", "10.15"]) == 0
    assert {"Attention", "RotaryEmbedding"} <= _ops(kept)  # 10.15's parser takes both
    assert optimize([str(src), "-o", str(dst), "--target", "trt", "--trt-version", "10.3"]) == 0
    out = capsys.readouterr().out
    assert "for TensorRT 10.3 (given): lowered 1 Attention, 2 RotaryEmbedding to primitive ops" in out
    assert not _ops(dst) & {"Attention", "RotaryEmbedding"}
    assert_same_outputs(model, onnx.load(dst), QKV, QKV_AXES, rng, lengths=(1, 37, 300))
    assert optimize([str(src), "-o", str(dst), "--target", "ort-trt"]) == 0
    assert not _ops(dst) & {"Attention", "RotaryEmbedding"}


@pytest.mark.parametrize("version, expected", [("10", "expected a TensorRT version X.Y such as 10.3, found '10'"),
                                               ("8.6", "TensorRT 8.6 is not supported: attnx supports TensorRT "
                                                       "10.3 or later")])
def test_trt_version_malformed_or_too_old_is_a_usage_error(tmp_path, capsys, version, expected):
    with pytest.raises(SystemExit) as exc:
        optimize([str(tmp_path / "in.onnx"), "-o", str(tmp_path / "out.onnx"), "--target", "trt",
                  "--trt-version", version])
    assert exc.value.code == 2 and expected in capsys.readouterr().err


def test_passes_take_repeats_and_commas_and_refuse_unknown_names(tmp_path, capsys):
    src = tmp_path / "in.onnx"
    onnx.save(export(EinsumLinearAttention(), QKV, QKV_AXES), src)
    assert optimize([str(src), "-o", str(tmp_path / "o.onnx"), "--passes", "reassociate,fuse-rotary",
                     "--passes", "fuse-linear-attention"]) == 0
    lines = [line.split()[0] for line in capsys.readouterr().out.splitlines() if "matched" in line]
    assert lines == ["fuse-rotary", "reassociate", "fuse-linear-attention", "left-alone"]
    with pytest.raises(SystemExit) as exc:
        optimize([str(src), "-o", str(tmp_path / "o.onnx"), "--passes", "reassociation"])
    assert exc.value.code == 2 and "expected one of fuse-rotary" in capsys.readouterr().err


def test_flop_line_is_honest_when_nothing_is_rewritten(tmp_path, capsys):
    """An already fused file, written as trt: plugin nodes are counted through their function bodies on
    the attnx form, so nothing rewritten reads unchanged (it once read "76.7x fewer")."""
    src, fused, report = tmp_path / "in.onnx", tmp_path / "fused.onnx", tmp_path / "r.json"
    onnx.save(export(EinsumLinearAttention(), QKV, QKV_AXES), src)
    assert optimize([str(src), "-o", str(fused)]) == 0
    capsys.readouterr()
    assert optimize([str(fused), "-o", str(tmp_path / "t.onnx"), "--target", "trt", "--report", str(report),
                     "--flops-seq-len", "1024"]) == 0
    data = json.loads(report.read_text())
    assert data["flops_before"] == data["flops_after"] > 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("MatMul/Einsum FLOPs"))
    assert "(unchanged)" in line and "fewer" not in line


def test_flops_count_standard_attention(tmp_path):
    """An ONNX Attention node's products count (onnx.inliner does not open schema functions)."""
    from helpers.attention_models import CausalSoftmaxAttention

    src, report = tmp_path / "in.onnx", tmp_path / "r.json"
    onnx.save(export(CausalSoftmaxAttention(), QKV, QKV_AXES, opset=23), src)
    assert optimize([str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(report),
                     "--flops-seq-len", "64"]) == 0
    data = json.loads(report.read_text())
    n, d, h = 64, 8, 2
    assert data["passes"][2]["rewritten"] == 1  # the MatMul-Softmax-MatMul became one Attention
    assert data["flops_before"] == data["flops_after"] == 2 * (2 * h * n * n * d)


def test_bf16_file_prints_no_graphsurgeon_warnings(exported, tmp_path, capfd):
    _, path = exported("linear-tiny", "bf16")
    assert optimize([str(path), "-o", str(tmp_path / "o.onnx"), "--target", "trt"]) == 0
    out, err = capfd.readouterr()
    assert not [line for line in (out + err).splitlines() if line.startswith(("[W]", "[E]"))], out + err
    out_model = onnx.load(tmp_path / "o.onnx")
    assert any(t.data_type == onnx.TensorProto.BFLOAT16 for t in out_model.graph.initializer)
