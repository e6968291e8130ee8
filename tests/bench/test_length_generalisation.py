"""`attnx bench length-generalisation`: relu²/n GAU drifts with length, causal softmax with log-n does not."""

import json

from attnx.cli.main import main


def test_table_shows_relu2_n_drifting_and_softmax_log_n_not(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["bench", "length-generalisation", "--models", "gau-n-tiny,gau-softmax-tiny", "--base-length", "16",
                 "--batch", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "entropy" in text and "drift" in text and "gau-softmax-tiny" in text
    rows = {(r["model"], r["length"]): r for r in json.loads(out.read_text())}
    assert set(rows) == {(m, n) for m in ("gau-n-tiny", "gau-softmax-tiny") for n in (16, 64, 256)}
    # relu²/n divides every row by the total length: the first 16 outputs shrink ~4× at 64
    assert rows["gau-n-tiny", 64]["drift"] > 0.5
    # causal softmax with the per-position log-n scale: the first 16 rows do not move
    assert rows["gau-softmax-tiny", 256]["drift"] < 1e-12
    assert abs(rows["gau-softmax-tiny", 256]["mass"] - 1) < 1e-12


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["bench", "length-generalisation", "--models", "nope-tiny"]) == 2
    assert "unknown model(s) nope-tiny; expected zoo names" in capsys.readouterr().err


def test_model_without_readable_attention_rows_is_refused(capsys):
    assert main(["bench", "length-generalisation", "--models", "linear-tiny", "--base-length", "8"]) == 2
    assert "reads attention rows of GAU and SoftmaxAttention, got LinearAttention" in capsys.readouterr().err
