"""ONNX Runtime execution providers: Polygraphy's names (tensorrt, cuda, cpu) to ONNX Runtime's,
with the provider options attnx sets, and sessions built from them.

What runs where:

- the attnx/ort form (attnx nodes with their ONNX functions) runs on every provider: cpu and cuda
  run the functions' bodies; tensorrt takes what its parser knows and leaves the rest to the
  providers after it.
- the TensorRT form (trt.plugins nodes, no functions) runs only with tensorrt first: ONNX Runtime
  registers the plugin library's creators as the `trt.plugins` custom-op domain for that provider
  alone, so on cpu or cuda such a file is refused before any session is built.

fp16: `trt_fp16_enable` is set when asked (`fp16=True`); attnx's callers ask for it when the file
itself is fp16 (attnx.check.parity.model_dtype), so that an fp32 file is built in fp32 and held to
the fp32 tolerance, and an fp16 file is built with fp16 kernels allowed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import onnx

from attnx.errors import BackendUnavailableError, OnnxFileError
from attnx.plugins import headers
from attnx.plugins.library import library_path
from attnx.surgeon.retarget import TRT_DOMAIN

# Polygraphy's provider names → ONNX Runtime's, in the order a user would list them
ORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SHORT_NAMES = {ort: short for short, ort in ORT_NAMES.items()}
DEVICE_ID = 0


def engine_cache_dir(fp16: bool, library: Path) -> Path:
    """Where the TensorRT provider keeps engines and its timing cache: one folder per precision and
    plugin library build, since ONNX Runtime keys a cached engine by the model alone and would load an
    fp32 engine for an fp16 run, or one built against another plugin library."""
    digest = hashlib.sha256(library.read_bytes()).hexdigest()[:12]
    return headers.cache_root() / "ort-trt-engines" / f"{'fp16' if fp16 else 'fp32'}-{digest}"


def _options(name: str, *, plugin_library: str | Path | None, fp16: bool) -> dict:
    if name == "cpu":
        return {}
    if name == "cuda":
        return {"device_id": DEVICE_ID}
    library = library_path(plugin_library).resolve()  # a missing library is PluginLibraryError (exit 2)
    cache = str(engine_cache_dir(fp16, library))
    return {"device_id": DEVICE_ID,
            "trt_extra_plugin_lib_paths": str(library),
            "trt_fp16_enable": fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache}


def resolve_providers(names: Sequence[str] | None, *, plugin_library: str | Path | None = None,
                      fp16: bool = False) -> list[tuple[str, dict]]:
    """[(ONNX Runtime provider name, provider options)] in priority order for Polygraphy-style `names`
    (tensorrt, cuda, cpu; None is ["cpu"]). A name ONNX Runtime does not have installed is
    BackendUnavailableError naming the installed ones; tensorrt gets the attnx plugin library
    (`plugin_library`, else $ATTNX_PLUGIN_LIB, else the default build) and `trt_fp16_enable` = `fp16`."""
    import onnxruntime

    names = list(names or ["cpu"])
    unknown = [n for n in names if n not in ORT_NAMES]
    if unknown:
        raise BackendUnavailableError(f"expected ONNX Runtime providers among {', '.join(ORT_NAMES)}, found "
                                      f"{', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise BackendUnavailableError(f"expected each provider once, found {', '.join(names)}")
    installed = onnxruntime.get_available_providers()
    missing = [n for n in names if ORT_NAMES[n] not in installed]
    if missing:
        hint = (" (the onnxruntime package is the CPU build; onnxruntime-gpu has the CUDA and TensorRT providers)"
                if ORT_NAMES["cuda"] not in installed else "")
        raise BackendUnavailableError(
            f"ONNX Runtime provider(s) {', '.join(missing)} asked for ({', '.join(ORT_NAMES[n] for n in missing)}), "
            f"but this onnxruntime {onnxruntime.__version__} has {', '.join(installed) or 'none'}{hint}")
    return [(ORT_NAMES[n], _options(n, plugin_library=plugin_library, fp16=fp16)) for n in names]


def backend_label(resolved: Sequence[tuple[str, dict]]) -> str:
    """"onnxruntime-cpu", "onnxruntime-tensorrt+cuda+cpu": the backend as reports name it."""
    return "onnxruntime-" + "+".join(SHORT_NAMES.get(name, name) for name, _ in resolved)


def check_form(model: onnx.ModelProto, resolved: Sequence[tuple[str, dict]], where: str = "the model") -> None:
    """Refuses a TensorRT-form file (trt.plugins nodes) unless tensorrt is the first provider: no other
    provider has those ops, and ONNX Runtime registers the plugin domain for tensorrt only."""
    plugins = sorted({n.op_type for n in model.graph.node if n.domain == TRT_DOMAIN})
    if plugins and (not resolved or resolved[0][0] != ORT_NAMES["tensorrt"]):
        raise OnnxFileError(
            f"{where} is the TensorRT form ({TRT_DOMAIN} nodes {', '.join(plugins)}), which runs only with "
            f"--providers tensorrt first (the plugin library's ops), found {backend_label(resolved)}; "
            "check the attnx form (`attnx optimize --target ort`) on cpu or cuda")


def _file_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's error types that mean the file (or a provider's option) is what it cannot take."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
             "NotImplemented", "ModelLoaded")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def session_loader(model: bytes | str | Path, resolved: Sequence[tuple[str, dict]],
                   where: str | None = None) -> Callable[[], "onnxruntime.InferenceSession"]:  # noqa: F821
    """A Polygraphy loader (for OnnxrtRunner, or called directly) building an InferenceSession of `model`
    (serialized bytes or a path) on `resolved` (resolve_providers). Checks the file's form against the
    providers first (check_form), and refuses a session ONNX Runtime built on other providers than asked
    (it silently retries on CUDA/CPU when the TensorRT provider fails)."""
    from polygraphy.backend.onnxrt import SessionFromOnnx

    where = where or (str(model) if isinstance(model, (str, Path)) else "the model")
    source = str(model) if isinstance(model, Path) else model
    try:
        proto = (onnx.load_from_string(model) if isinstance(model, bytes)
                 else onnx.load(str(model), load_external_data=False))
    except Exception as exc:  # OSError, protobuf's DecodeError: a file that does not read
        raise OnnxFileError(f"expected an ONNX model in {where}, found that it does not read: "
                            f"{type(exc).__name__}: {exc}") from exc
    check_form(proto, resolved, where)
    wanted = [name for name, _ in resolved]
    label = backend_label(resolved)

    def load():
        for name, options in resolved:
            if "trt_engine_cache_path" in options:
                Path(options["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            session = SessionFromOnnx(source, providers=[(n, dict(o)) for n, o in resolved])()
        except _file_errors() as exc:  # a file or provider ONNX Runtime cannot take; a RuntimeException
            # (out of memory, a provider's crash) is not the file's fault and stays an internal error
            raise OnnxFileError(f"ONNX Runtime ({label}) cannot build a session of {where}: "
                                f"{type(exc).__name__}: {exc}") from exc
        got = session.get_providers()  # ONNX Runtime appends CPU when it is not asked for
        if [name for name in got if name in wanted] != wanted:
            raise BackendUnavailableError(f"expected ONNX Runtime to run {where} on {', '.join(wanted)}, found a "
                                          f"session on {', '.join(got)} (a provider failed to initialise; see "
                                          "ONNX Runtime's log above)")
        return session

    return load
