"""Every parity run reads its ONNX file once and builds its runner from that model, not from the
path (TensorRT is stood in for by ONNX Runtime on the attnx-form model: this machine has no TensorRT)."""

import onnx
import pytest
from polygraphy.backend import onnxrt as polygraphy_onnxrt
from polygraphy.backend import trt as polygraphy_trt
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

from attnx.check import check_parity, check_trt
from attnx.plugins import engine


@pytest.mark.parametrize("backend", ["ort", "trt"])
def test_a_parity_run_reads_its_file_once(backend, exported, monkeypatch, tmp_path):
    loaded, path = exported("linear-tiny")
    reads, load = [], onnx.load
    monkeypatch.setattr(onnx, "load", lambda f, *args, **kwargs: reads.append(f) or load(f, *args, **kwargs))
    sessions = []  # what each ONNX Runtime session was made from: bytes, or a path it would read again

    def session(model, **kwargs):
        sessions.append(type(model))
        return SessionFromOnnx(model, **kwargs)

    monkeypatch.setattr(polygraphy_onnxrt, "SessionFromOnnx", session)  # what attnx.check.providers builds with
    if backend == "ort":
        report = check_parity(path, loaded, seq_lens=[3])
    else:
        library = tmp_path / "libattnx_plugins.so"
        library.write_bytes(b"")
        monkeypatch.setattr(engine, "require_tensorrt", lambda: None)
        monkeypatch.setattr(engine, "TrtFormFromOnnx", lambda model: model)
        monkeypatch.setattr(engine, "EngineFromOnnx", lambda model, **options: model)
        monkeypatch.setattr(polygraphy_trt, "TrtRunner", lambda model, name: OnnxrtRunner(
            session(model.SerializeToString(), providers=["cpu"]), name=name))
        report = check_trt(path, loaded, seq_lens=[3], plugin_library=library)
    assert report.passed
    assert reads == [path], f"{path} read {len(reads)} times: {reads}"
    assert sessions == [bytes]
