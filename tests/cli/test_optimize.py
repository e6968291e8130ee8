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
