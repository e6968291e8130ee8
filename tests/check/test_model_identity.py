"""Which model `check` compares a file with: never Python named by the file, never another model
reported as a parity failure (exit 2, not 1), and the fingerprint covering the architecture."""

import hashlib
import subprocess
import sys

import onnx
import pytest
import torch

from attnx.check import check_parity
from attnx.cli.main import main
from attnx.errors import InputError
from attnx.exporters.stream import export_stream
from attnx.models import load_model

NEW_KEYS = ("attnx.architecture_sha256", "attnx.model_weights_sha256")


def _with_metadata(src, dst, **changes):
    """A copy of the ONNX file `src` at `dst`, metadata keys set (a value of None removes the key)."""
    model = onnx.load(src)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(changes)
    del model.metadata_props[:]
    for key, value in meta.items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, dst)
    return dst


def _factory(tmp_path, marker):
    """A factory file that writes `marker` when imported and builds the zoo's linear-tiny."""
    src = tmp_path / "evil.py"
    src.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
                   "from attnx.models import load_model\n"
                   "def build():\n    m = load_model('linear-tiny')\n    return m.module, m.example_inputs\n")
    return src


def _old_scheme_sha256(module: torch.nn.Module) -> str:
    """The digest attnx recorded before the architecture digest (values and shapes, state_dict order)."""
    digest = hashlib.sha256()
    for tensor in module.state_dict().values():
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_without_model_the_recorded_zoo_name_is_used_and_said(exported, capsys):
    _, path = exported("linear-tiny")
    assert main(["check", str(path), "--seq-len", "3"]) == 0
    err = capsys.readouterr().err
    assert "checking against model linear-tiny (recorded in the file's attnx.model)" in err


def test_model_given_on_the_command_line_is_said(exported, capsys):
    _, path = exported("linear-tiny")
    assert main(["check", str(path), "--model", "linear-tiny", "--seq-len", "3"]) == 0
    assert "checking against model linear-tiny (given on the command line)" in capsys.readouterr().err


def test_a_factory_recorded_in_the_file_is_not_executed(exported, tmp_path):
    _, path = exported("linear-tiny")
    marker = tmp_path / "marker"
    factory = f"{_factory(tmp_path, marker)}:build"
    evil = _with_metadata(path, tmp_path / "evil.onnx", **{"attnx.model": factory})
    proc = subprocess.run([sys.executable, "-m", "attnx.cli", "check", str(evil), "--seq-len", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not marker.exists(), "check imported the Python factory the file names"
    assert "records a Python factory as its model" in proc.stderr and f"--model {factory}" in proc.stderr
    assert "Traceback" not in proc.stderr
    # given on the command line, the same factory is imported (and builds the model the file holds)
    assert main(["check", str(evil), "--model", factory, "--seq-len", "3"]) == 0
    assert marker.read_text() == "imported"


def test_a_recorded_name_other_than_model_is_refused_unless_forced(exported, capsys):
    _, path = exported("linear-tiny")
    assert main(["check", str(path), "--model", "softmax-tiny", "--seq-len", "3"]) == 2
    out, err = capsys.readouterr()
    assert "FAILED" not in out
    assert "records model 'linear-tiny', but --model is 'softmax-tiny'" in err and "--force" in err


def test_forced_onto_another_architecture_it_is_a_different_model_not_a_parity_failure(exported, capsys):
    # linear-tiny and softmax-tiny have the same parameter names, shapes and (one seed) values
    _, path = exported("linear-tiny")
    assert main(["check", str(path), "--model", "softmax-tiny", "--force", "--seq-len", "3"]) == 2
    out, err = capsys.readouterr()
    assert "FAILED" not in out
    assert "exported from a different model than softmax-tiny (the file records linear-tiny)" in err
    assert "architecture sha256" in err


def test_the_parity_api_refuses_another_model(exported):
    _, path = exported("linear-tiny")
    with pytest.raises(InputError, match="different model than softmax-tiny"):
        check_parity(path, load_model("softmax-tiny"), seq_lens=[3])


def test_other_weights_of_one_architecture_are_refused(exported):
    _, path = exported("linear-tiny")
    loaded = load_model("linear-tiny")
    with torch.no_grad():
        next(loaded.module.parameters()).add_(1e-3)
    with pytest.raises(InputError, match="other weights than linear-tiny"):
        check_parity(path, loaded, seq_lens=[3])


@pytest.mark.parametrize("a, b", [("linear-tiny", "softmax-tiny"), ("local-tiny", "dilated-tiny"),
                                  ("gau-tiny", "gau-n-tiny"), ("linear-tiny", "local-tiny")])
def test_zoo_models_with_the_same_weights_record_different_architectures(exported, a, b):
    recorded = [{p.key: p.value for p in onnx.load(exported(name)[1]).metadata_props} for name in (a, b)]
    assert _old_scheme_sha256(load_model(a).module) == _old_scheme_sha256(load_model(b).module)
    assert recorded[0]["attnx.architecture_sha256"] != recorded[1]["attnx.architecture_sha256"]


def test_a_file_from_before_the_architecture_digest_is_verified_by_the_old_scheme(exported, tmp_path, capsys):
    _, path = exported("linear-tiny")
    old = dict.fromkeys(NEW_KEYS)
    good = _with_metadata(path, tmp_path / "old.onnx", **old,
                          **{"attnx.weights_sha256": _old_scheme_sha256(load_model("linear-tiny").module)})
    assert main(["check", str(good), "--seq-len", "3"]) == 0
    assert "exported before attnx recorded the architecture" in capsys.readouterr().err
    bad = _with_metadata(path, tmp_path / "old-bad.onnx", **old, **{"attnx.weights_sha256": "0" * 64})
    assert main(["check", str(bad), "--seq-len", "3"]) == 2
    assert "other weights than linear-tiny" in capsys.readouterr().err


def test_a_file_without_a_model_record_needs_model(exported, tmp_path, capsys):
    _, path = exported("linear-tiny")
    bare = _with_metadata(path, tmp_path / "bare.onnx", **{"attnx.model": None})
    assert main(["check", str(bare), "--seq-len", "3"]) == 2
    assert "does not say which model it came from (no attnx.model metadata): pass --model" in capsys.readouterr().err


def test_a_recorded_name_that_is_no_zoo_model_is_refused(exported, tmp_path, capsys):
    _, path = exported("linear-tiny")
    odd = _with_metadata(path, tmp_path / "odd.onnx", **{"attnx.model": "no-such-model"})
    assert main(["check", str(odd), "--seq-len", "3"]) == 2
    assert "records model 'no-such-model', which is not a zoo name" in capsys.readouterr().err


@pytest.fixture(scope="module")
def linear_stream(tmp_path_factory):
    return export_stream(load_model("linear-tiny"), tmp_path_factory.mktemp("stream") / "lin.onnx", "both")


def _stream_args(paths):
    return ["check", str(paths["prefill"].with_name("lin.onnx")), "--mode", "stream", "--seq-len", "3",
            "--new-tokens", "2"]


def test_stream_check_reads_the_recorded_model(linear_stream, capsys):
    assert main(_stream_args(linear_stream)) == 0
    assert "checking against model linear-tiny (recorded in the file's attnx.model)" in capsys.readouterr().err


def test_stream_check_refuses_another_model(linear_stream, capsys):
    assert main([*_stream_args(linear_stream), "--model", "softmax-tiny"]) == 2
    out, err = capsys.readouterr()
    assert "FAILED" not in out and "records model 'linear-tiny', but --model is 'softmax-tiny'" in err
    assert main([*_stream_args(linear_stream), "--model", "softmax-tiny", "--force"]) == 2
    assert "different model than softmax-tiny" in capsys.readouterr().err


def test_stream_graphs_of_two_models_are_refused(linear_stream, tmp_path, capsys):
    pair = {m: tmp_path / f"lin.{m}.onnx" for m in ("prefill", "decode")}
    _with_metadata(linear_stream["prefill"], pair["prefill"])
    _with_metadata(linear_stream["decode"], pair["decode"], **{"attnx.model": "softmax-tiny"})
    assert main(_stream_args(pair)) == 2
    assert "record different models ('linear-tiny' and 'softmax-tiny')" in capsys.readouterr().err


def test_a_decode_graph_with_its_cache_handed_to_attention_keeps_its_record(tmp_path):
    # opset 23: the decode graph is rewritten after export (cache_into_attention)
    path = export_stream(load_model("softmax-tiny"), tmp_path / "s.onnx", "decode", opset=23)["decode"]
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta.get("attnx.model") == "softmax-tiny" and set(NEW_KEYS) <= set(meta)
