"""`attnx bench fusion` at a small length on two public models: it runs, writes its rows, the graphs
it times compute the same thing before and after optimize, and a missing package is a row."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from attnx.bench import BENCHMARKS, fusion
from attnx.cli.main import main


def test_bench_is_registered():
    assert BENCHMARKS["fusion"][0] == "fusion"


def test_bench_runs_two_models_and_writes_rows(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["bench", "fusion", "--models", "encoder,x-transformers", "--seq-len", "64", "--repeats", "1",
                 "--threads", "1", "--json", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"encoder", "x-transformers"}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["before_ms"] > 0 and row["after_ms"] > 0 and row["optimize_s"] > 0
        assert row["ratio"] == pytest.approx(row["after_ms"] / row["before_ms"])
        assert row["rel_diff"] <= 1e-4  # float32 reordering ~1e-6; a wrong fusion is 1e-2 or more
    assert rows["x-transformers"]["fused"]  # its rotary and softmax attention fuse (issue 14: they did before)
    assert rows["x-transformers"]["timed_shapes"] == {"x0": [1, 64, 32]}
    printed = capsys.readouterr().out
    assert "ratio = after/before" in printed and "x-transformers" in printed


def test_a_model_whose_package_is_missing_is_a_row(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(fusion.MODELS, "encoder", lambda n: fusion._need("attnx_no_such_package", "no-such-pkg"))
    assert main(["bench", "fusion", "--models", "encoder", "--seq-len", "8", "--repeats", "1"]) == 0
    assert "encoder          not installed: no-such-pkg (pip install no-such-pkg" in capsys.readouterr().out


def test_an_unknown_model_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "fusion", "--models", "encoder,nope"])
    assert exc.value.code == 2 and "expected one of" in capsys.readouterr().err


def test_rel_diff_is_relative_to_the_largest_value_and_catches_nan():
    want = [np.array([[2.0, -4.0]])]
    assert fusion._rel_diff(want, [np.array([[2.0, -4.004]])]) == pytest.approx(1e-3)
    assert fusion._rel_diff(want, [np.array([[2.0, np.nan]])]) == float("inf")
    assert fusion._rel_diff(want, [np.array([2.0, -4.0])]) == float("inf")  # another shape


def test_vit_grid_is_near_n():
    for n in (64, 2048, 300):
        h, w = fusion._vit_grid(n)
        assert n <= h * w < n + h
