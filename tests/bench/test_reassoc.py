"""`attnx bench reassoc` at a small length: it runs, and its three graphs compute the same thing."""

import argparse
import json

import numpy as np
import onnxruntime as ort

from attnx.bench import reassoc
from attnx.cli.options import ListOption
from attnx.surgeon import optimize_model


def test_bench_runs_and_writes_rows(tmp_path):
    parser = argparse.ArgumentParser()
    parser.register("action", "list", ListOption)  # as attnx.cli.bench registers it
    reassoc.add_arguments(parser)
    out = tmp_path / "rows.json"
    args = parser.parse_args(["--lengths", "256", "--dim", "16", "--repeats", "1", "--json", str(out)])
    assert reassoc.run(args) == 0
    (row,) = json.loads(out.read_text())
    assert row["n"] == 256 and row["flops_ratio"] > 1


def test_reassociated_graph_equals_the_hand_written_one():
    quadratic, hand = reassoc._graphs(16)
    reassociated, _ = optimize_model(quadratic, "ort", ["reassociate"])
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((1, 1, 300, 16), dtype=np.float32) for x in "qkv"}
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            for m in (quadratic, reassociated, hand)]
    # rtol: float32 sums of 300 terms in another order
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs[1], outs[2], rtol=1e-4, atol=1e-5)
