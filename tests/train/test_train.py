"""attnx train: determinism, the shipped checkpoints, their export parity."""

import json

import pytest
import torch

from attnx.cli.main import main
from attnx.models import ZOO, load_model
from attnx.models.trained import checkpoint_path, read_checkpoint
from attnx.models.zoo import TRAINED
from attnx.train import tasks
from attnx.train.loop import EVAL_SEED, evaluate


@pytest.mark.parametrize("name", list(TRAINED))
def test_shipped_checkpoint_reproduces_its_recorded_metrics(name):
    # the same weights on the same evaluation examples (EVAL_SEED): only the float sums' order can
    # differ from the run that recorded them (threads, CPU kernels), a few ulps of float32 in the
    # loss, and the argmax flips only at a tie: 1e-4 on the loss and one example of 512 in accuracy
    _, record = read_checkpoint(checkpoint_path(name))
    module = load_model(name).module
    metrics = evaluate(module, record["task"], record["seq_len"])
    assert metrics["examples"] == record["metrics"]["examples"]
    assert abs(metrics["loss"] - record["metrics"]["loss"]) < 1e-4
    assert abs(metrics["accuracy"] - record["metrics"]["accuracy"]) <= 1 / 512
    assert record["command"].startswith(f"attnx train {TRAINED[name]} --task recall --seq-len 64 ")


def _train(tmp_path, name, seed):
    out = tmp_path / name
    assert main(["train", "flash-tiny", "--task", "copy", "--seq-len", "37", "--steps", "3", "--batch", "4",
                 "--seed", str(seed), "-o", str(out)]) == 0
    return read_checkpoint(out)


def test_short_training_is_deterministic_for_a_seed(tmp_path):
    state_a, record_a = _train(tmp_path, "a.safetensors", 5)
    state_b, record_b = _train(tmp_path, "b.safetensors", 5)
    state_c, _ = _train(tmp_path, "c.safetensors", 6)
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert record_a["weights_sha256"] == record_b["weights_sha256"]
    assert any(not torch.equal(state_a[k], state_c[k]) for k in state_a)  # the seed does matter
    assert record_a["command"] == ("attnx train flash-tiny --task copy --seq-len 37 --steps 3 --batch 4 --lr 0.003 "
                                   f"--threads 1 --seed 5 -o {tmp_path / 'a.safetensors'}")
    # training moved the weights away from their initial draw, attention included (custom-op gradients)
    torch.manual_seed(5)
    initial = ZOO["flash-tiny"].build().state_dict()
    assert not torch.equal(initial["blocks.0.attention.qk.gamma"], state_a["blocks.0.attention.qk.gamma"])


def test_tasks_hold_exactly_one_needle():
    g = torch.Generator().manual_seed(0)
    ids, answers = tasks.recall(64, 50, g)
    key = ids[:, -1] - tasks.QUERY_BASE
    pair_keys = ids[:, :-1] // tasks.VALUES
    assert ((pair_keys == key[:, None]).sum(1) == 1).all()
    needle = ids[:, :-1][pair_keys == key[:, None]]
    assert torch.equal(needle % tasks.VALUES, answers)
    ids, answers = tasks.copy(64, 50, g)
    data = ids[:, :-1] < tasks.DATA
    assert (data.sum(1) == 1).all() and torch.equal(ids[:, :-1][data], answers)
    assert (ids[:, -1] == tasks.MARKER).all()


def test_convert_passes_on_a_trained_model(tmp_path, capsys):
    assert main(["convert", "gau-n-trained", "-o", str(tmp_path / "out")]) == 0


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def test_bench_plot_without_matplotlib_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    png = tmp_path / "plot.png"
    assert main(["bench", "length-generalisation", "--trained", "--models", "softmax-trained", "--factors", "1",
                 "--examples", "4", "--plot", str(png)]) == 2
    captured = capsys.readouterr()
    assert "--plot needs matplotlib" in captured.err and "softmax-trained" not in captured.out
    assert not png.exists()


def test_bench_table_comes_from_the_checkpoints(tmp_path, capsys):
    out, png = tmp_path / "rows.json", tmp_path / "plot.png"
    plot = ["--plot", str(png)] if _has_matplotlib() else []  # matplotlib: the [bench] and [test] extras
    assert main(["bench", "length-generalisation", "--trained", "--models", "softmax-trained", "--factors", "1,2",
                 "--examples", "16", "--json", str(out), *plot]) == 0
    text = capsys.readouterr().out
    assert "softmax-trained" in text and "±" in text and "entropy" in text
    rows = json.loads(out.read_text())
    assert [r["length"] for r in rows] == [64, 128]
    module = load_model("softmax-trained").module
    for row in rows:  # each seed-0 figure is the checkpoint's answers on 16 examples from the evaluation seed
        ids, answers = tasks.recall(16, row["length"], torch.Generator().manual_seed(EVAL_SEED))
        with torch.no_grad():
            logits = module(ids)[:, -1].double()
        assert row["accuracy"][0] == float((logits.argmax(-1) == answers).double().mean())
        # float32 logits, the loss summed in float32 by the bench and float64 here: 1e-5
        assert abs(row["loss"][0] - float(torch.nn.functional.cross_entropy(logits, answers))) < 1e-5
        assert len(row["accuracy"]) == len(row["seeds"]) and row["seeds"][0] == 0
    assert rows[1]["drift"] is not None and rows[1]["entropy"] > 0
    if plot:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model, message", [
    ("nope-tiny", "unknown model 'nope-tiny': expected a zoo language model"),
    ("vit-rope2d-tiny", "vit-rope2d-tiny: expected a zoo language model (token ids in, logits out), found a TinyViT"),
])
def test_train_refuses_what_is_not_a_zoo_language_model(tmp_path, capsys, model, message):
    out = tmp_path / "x.safetensors"
    assert main(["train", model, "--task", "recall", "--steps", "1", "-o", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()
