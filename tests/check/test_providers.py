"""ONNX Runtime providers (attnx.check.providers): what a CPU machine can show.

The provider list and the exact options attnx builds for tensorrt, cuda and cpu; a provider not
installed is exit 2 naming the installed ones; the GPU branches are followed up to session creation
by making onnxruntime.get_available_providers() report the GPU providers (ONNX Runtime's own
session code still sees the CPU build, so no GPU result is faked: the session is refused, and the
test checks that it is refused clearly). The runs on a GPU are in tools/gpu_check.py.
"""

import hashlib

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from attnx.check.providers import backend_label, check_form, resolve_providers, session_loader
from attnx.check.stream import check_stream
from attnx.cli.main import main
from attnx.errors import BackendUnavailableError, OnnxFileError
from attnx.exporters.stream import export_stream
from attnx.models import load_model
from attnx.plugins.library import PluginLibraryError
from attnx.surgeon.retarget import retarget

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.fixture
def gpu_build(monkeypatch, tmp_path):
    """get_available_providers() as onnxruntime-gpu answers it, a stand-in plugin library file (only its
    path and bytes are read before a session), and the user cache under tmp_path."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ATTNX_PLUGIN_LIB", raising=False)
    library = tmp_path / "libattnx_plugins.so"
    library.write_bytes(b"stand-in library bytes")
    return library


def _cache(tmp_path, precision, library):
    digest = hashlib.sha256(library.read_bytes()).hexdigest()[:12]
    return str(tmp_path / "cache" / "attnx" / "ort-trt-engines" / f"{precision}-{digest}")


def test_cpu_is_the_default_and_has_no_options():
    assert resolve_providers(None) == [(CPU, {})]
    assert resolve_providers(["cpu"]) == [(CPU, {})]
    assert backend_label(resolve_providers(None)) == "onnxruntime-cpu"


@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_cuda_cpu_in_order_with_the_plugin_library_fp16_and_an_engine_cache(gpu_build, tmp_path, fp16):
    resolved = resolve_providers(["tensorrt", "cuda", "cpu"], plugin_library=str(gpu_build), fp16=fp16)
    cache = _cache(tmp_path, "fp16" if fp16 else "fp32", gpu_build)
    assert resolved == [
        (TRT, {"device_id": 0, "trt_extra_plugin_lib_paths": str(gpu_build.resolve()), "trt_fp16_enable": fp16,
               "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
               "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}),
        (CUDA, {"device_id": 0}),
        (CPU, {})]
    assert backend_label(resolved) == "onnxruntime-tensorrt+cuda+cpu"


def test_the_engine_cache_changes_with_the_plugin_library(gpu_build, tmp_path):
    before = resolve_providers(["tensorrt"], plugin_library=gpu_build)[0][1]["trt_engine_cache_path"]
    gpu_build.write_bytes(b"a rebuilt library")
    after = resolve_providers(["tensorrt"], plugin_library=gpu_build)[0][1]["trt_engine_cache_path"]
    assert before != after


def test_tensorrt_takes_the_library_from_the_environment_and_refuses_a_missing_one(gpu_build, monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNX_PLUGIN_LIB", str(gpu_build))
    assert resolve_providers(["tensorrt"])[0][1]["trt_extra_plugin_lib_paths"] == str(gpu_build.resolve())
    with pytest.raises(PluginLibraryError, match=f"no plugin library at {tmp_path / 'absent.so'}"):
        resolve_providers(["tensorrt"], plugin_library=tmp_path / "absent.so")
    # cuda and cpu need no library: a missing one is no error there
    assert resolve_providers(["cuda", "cpu"], plugin_library=tmp_path / "absent.so") == [(CUDA, {"device_id": 0}),
                                                                                        (CPU, {})]


def test_a_provider_not_installed_names_the_installed_ones():
    installed = onnxruntime.get_available_providers()
    assert CUDA not in installed, "this test runs on the CPU build of onnxruntime"
    with pytest.raises(BackendUnavailableError) as exc:
        resolve_providers(["tensorrt", "cuda", "cpu"])
    text = str(exc.value)
    assert "tensorrt, cuda asked for" in text and CPU in text and "onnxruntime-gpu" in text


def _one_node_model(node: onnx.NodeProto, opsets) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([node], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]).SerializeToString()


TRT_FORM = _one_node_model(helper.make_node("AttnxLinearAttention", ["x"], ["y"], domain="trt.plugins",
                                            plugin_version="1", plugin_namespace="attnx"),
                           [("", 18), ("trt.plugins", 1)])
PLAIN = _one_node_model(helper.make_node("Relu", ["x"], ["y"]), [("", 18)])


@pytest.mark.parametrize("names", [["cpu"], ["cuda", "cpu"], ["cuda", "tensorrt", "cpu"]])
def test_a_trt_form_file_runs_only_with_tensorrt_first(gpu_build, names):
    resolved = resolve_providers(names, plugin_library=gpu_build)
    with pytest.raises(OnnxFileError, match="is the TensorRT form .*trt.plugins nodes AttnxLinearAttention.*"
                                            "--providers tensorrt first"):
        session_loader(TRT_FORM, resolved, "f.onnx")
    check_form(onnx.load_from_string(TRT_FORM), resolve_providers(["tensorrt"], plugin_library=gpu_build))


def test_a_session_on_other_providers_than_asked_is_refused(gpu_build):
    # ONNX Runtime's CPU build drops the CUDA provider it does not have (with a warning) and builds a CPU
    # session, as onnxruntime-gpu does when the CUDA provider fails to load: attnx must not run on it
    load = session_loader(PLAIN, resolve_providers(["cuda", "cpu"]), "f.onnx")
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        with pytest.raises(BackendUnavailableError, match="expected ONNX Runtime to run f.onnx on CUDAExecutionProvider, "
                                                          "CPUExecutionProvider, found a session on CPUExecutionProvider"):
            load()


def test_a_session_onnx_runtime_cannot_build_says_on_which_providers(gpu_build):
    load = session_loader(TRT_FORM, resolve_providers(["tensorrt", "cuda", "cpu"], plugin_library=gpu_build), "f.onnx")
    with pytest.warns(UserWarning):
        with pytest.raises(OnnxFileError, match=r"ONNX Runtime \(onnxruntime-tensorrt\+cuda\+cpu\) cannot build a "
                                                "session of f.onnx"):
            load()
    cache = resolve_providers(["tensorrt"], plugin_library=gpu_build)[0][1]["trt_engine_cache_path"]
    assert (gpu_build.parent / "cache").exists() and cache.startswith(str(gpu_build.parent / "cache"))


def test_the_cpu_session_runs(rng):
    session = session_loader(PLAIN, resolve_providers(["cpu"]))()
    assert session.get_providers() == [CPU]
    x = np.random.default_rng(int(rng.initial_seed())).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.maximum(x, 0))


@pytest.fixture(scope="module")
def linear_stream(tmp_path_factory):
    loaded = load_model("linear-tiny")
    return loaded, export_stream(loaded, tmp_path_factory.mktemp("stream") / "linear-tiny.onnx", "both")


def test_the_cpu_stream_verdict_is_the_default_one(linear_stream):
    # 1 and 13 (not a multiple of the 64-token chunk) prompt tokens, 2 decode steps
    loaded, paths = linear_stream
    kwargs = dict(prompt_lens=(1, 13), new_tokens=2, batch=1, seed=3)
    default = check_stream(loaded, paths["prefill"], paths["decode"], **kwargs)
    cpu = check_stream(loaded, paths["prefill"], paths["decode"], providers=["cpu"], **kwargs)
    assert [r.backend for r in cpu] == [r.backend for r in default]
    assert cpu[1].backend.startswith("onnxruntime-cpu stream")
    assert [r.outputs for r in cpu] == [r.outputs for r in default]
    assert all(report.passed for report in cpu)


def test_the_cpu_parity_verdict_is_the_default_one(exported):
    from attnx.check.parity import check_parity

    loaded, path = exported("linear-tiny")
    default = check_parity(path, loaded, seq_lens=(1, 37), batch=1, seed=5)
    cpu = check_parity(path, loaded, seq_lens=(1, 37), batch=1, seed=5, providers=["cpu"])
    assert cpu.backend == default.backend == "onnxruntime-cpu"
    assert cpu.outputs == default.outputs and cpu.passed


def test_a_trt_form_stream_on_cpu_is_refused_before_running(linear_stream, tmp_path):
    loaded, paths = linear_stream
    trt = {}
    for graph, path in paths.items():
        trt[graph] = tmp_path / f"{graph}.trt.onnx"
        onnx.save(retarget(onnx.load(path), "trt"), trt[graph])
    with pytest.raises(OnnxFileError, match=f"{trt['prefill']} is the TensorRT form .*LinearAttention.*"
                                            "--providers tensorrt first.*found onnxruntime-cpu"):
        check_stream(loaded, trt["prefill"], trt["decode"], providers=["cpu"])


def test_the_stream_check_refuses_a_provider_not_installed_before_running(linear_stream):
    loaded, paths = linear_stream
    with pytest.raises(BackendUnavailableError, match="cuda asked for"):
        check_stream(loaded, paths["prefill"], paths["decode"], providers=["cuda"])


def _error(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("argv", [["generate", "--providers", "tensorrt,cpu"],
                                  ["generate", "--providers", "cuda", "--providers", "cpu"]])
def test_generate_with_a_provider_not_installed_is_exit_2_naming_the_installed(capsys, argv):
    assert main(argv) == 2
    line = _error(capsys)
    assert "asked for" in line and CPU in line


def test_check_with_a_provider_not_installed_is_exit_2_naming_the_installed(capsys, exported):
    _, path = exported("linear-tiny")
    assert main(["check", str(path), "--model", "linear-tiny", "--providers", "cuda,cpu"]) == 2
    line = _error(capsys)
    assert "cuda asked for" in line and CPU in line


def test_generate_warns_that_plugins_are_ignored_without_tensorrt(capsys, monkeypatch, tmp_path):
    import attnx.generate

    calls = []

    def record(loaded, work_dir, **kwargs):
        calls.append(kwargs)
        return attnx.generate.Generation([1], [2], 0.0, [], 0)

    monkeypatch.setattr(attnx.generate, "generate", record)
    assert main(["generate", "--plugins", str(tmp_path / "lib.so"), "--new-tokens", "1"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [f"attnx generate: warning: --plugins {tmp_path / 'lib.so'} is ignored: only --backend trt "
                        "or --providers tensorrt loads a plugin library"]
    assert calls[0]["plugin_library"] is None and calls[0]["providers"] is None
    # with tensorrt among the providers the library is used: no warning, and it is handed on
    assert main(["generate", "--plugins", str(tmp_path / "lib.so"), "--providers", "tensorrt,cpu"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert calls[1]["plugin_library"] == str(tmp_path / "lib.so") and calls[1]["providers"] == ["tensorrt", "cpu"]


def test_generate_refuses_providers_with_the_trt_backend(capsys):
    assert main(["generate", "--backend", "trt", "--providers", "cuda"]) == 2
    assert "expected them with --backend ort" in _error(capsys)


def test_the_gpu_recipe_skips_its_onnx_runtime_step_without_onnxruntime_gpu(gpu_check, tmp_path):
    step = gpu_check.ort_gpu_step(tmp_path / "lib.so", tmp_path)
    assert step["ran"] is False and step["passed"] is None
    assert "not onnxruntime-gpu" in step["why"] and CPU in step["why"]


def test_the_gpu_recipe_counts_a_provider_that_did_not_run_as_failed(gpu_check, gpu_build, monkeypatch, tmp_path):
    # onnxruntime-gpu whose CUDA provider does not load (here: the CPU build): the cuda run fails, it does
    # not pass on the CPU; the tensorrt runs are skipped, as the TensorRT provider is not listed
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        step = gpu_check.ort_gpu_step(gpu_build, tmp_path)
    assert step["ran"] is True and step["passed"] is False
    assert [(r["graphs"], r["form"], r["providers"][0]) for r in step["runs"]] == [
        (graphs, form, first) for graphs in ("full", "stream")
        for form, first in (("attnx", "cuda"), ("attnx", "tensorrt"), ("trt", "tensorrt"))]
    for run in step["runs"]:
        if run["providers"][0] == "cuda":
            assert run["passed"] is False and "found a session on CPUExecutionProvider" in run["why"]
        else:
            assert run["passed"] is None and "no TensorrtExecutionProvider" in run["why"]
