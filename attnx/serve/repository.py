"""Write a Triton model repository for one attnx model or file (docs/serving.md has the layouts).

    REPO/<name>/config.pbtxt          built as Triton's ModelConfig, validated (attnx.serve.config)
    REPO/<name>/1/model.py            python: attnx.serve.triton_model, running the graphs below
    REPO/<name>/1/full.onnx           python, --mode full
    REPO/<name>/1/prefill.onnx, decode.onnx    python, --mode stream
    REPO/<name>/1/model.onnx          onnxruntime: the full graph, or the decode graph in stream mode
    REPO/<name>/1/model.plan          tensorrt: the engine of the same graph (built where TensorRT is)

The whole repository lands at once or not at all (attnx.files.atomic_outputs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import site
import sys
import tempfile
from pathlib import Path

import onnx

from attnx.errors import BackendUnavailableError, InputError, OnnxFileError
from attnx.files import atomic_outputs, check_output_folder
from attnx.serve import BACKENDS, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_SEQUENCES, MODES
from attnx.serve.config import TRITON_TYPES, Tensor, model_config, validated_text

MODEL_PY = Path(__file__).with_name("triton_model.py")
VERSION = "1"


@dataclasses.dataclass
class Repository:
    root: Path
    name: str
    files: list[Path]
    notes: list[str]  # what the user must still do (an engine that could not be built here)


def site_packages() -> list[str]:
    """This environment's site-packages folders, for the Python backend stub to put on sys.path."""
    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        folders.append(site.getusersitepackages())
    return [f for f in folders if os.path.isdir(f)]


def _tensors(values) -> list[Tensor]:
    out = []
    for value in values:
        elem = value.type.tensor_type.elem_type
        if elem not in TRITON_TYPES:
            known = ", ".join(map(onnx.TensorProto.DataType.Name, TRITON_TYPES))
            raise OnnxFileError(f"{value.name}: element type {onnx.TensorProto.DataType.Name(elem)} has no Triton "
                                f"type here; expected one of {known}")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
        out.append(Tensor(value.name, TRITON_TYPES[elem], dims))
    return out


def _graphs(source, mode: str, work: Path, *, dtype: str, opset: int | None) -> dict[str, Path]:
    """{"full": path} or {"prefill": path, "decode": path}: exported from a LoadedModel into `work`, or the
    user's files (FILE, or FILE's .prefill/.decode.onnx pair)."""
    from attnx.exporters.onnx_export import export
    from attnx.exporters.stream import export_stream, stream_paths

    if not isinstance(source, (str, Path)):
        if mode == "full":
            path = work / "full.onnx"
            export(source, path, dtype=dtype, opset=opset)
            return {"full": path}
        return export_stream(source, work / "model.onnx", "both", dtype=dtype, opset=opset)
    path = Path(source)
    if mode == "full":
        if not path.is_file():
            raise InputError(f"expected an ONNX file at {path}, found none")
        return {"full": path}
    base = re.sub(r"\.(prefill|decode)\.onnx$", ".onnx", str(path))
    pair = stream_paths(base, "both")
    missing = [str(p) for p in pair.values() if not p.is_file()]
    if missing:
        raise InputError(f"--mode stream serves a prefill/decode pair: expected {pair['prefill']} and "
                         f"{pair['decode']}, found no {', '.join(missing)} (attnx export MODEL -o {base} --mode both)")
    return pair


def _model_name(source, name: str | None) -> str:
    if name is None:
        name = source.name if not isinstance(source, (str, Path)) else re.sub(
            r"(\.(prefill|decode))?\.onnx$", "", Path(source).name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"expected a model name of letters, digits, '_', '.', '-', found {name!r} (--name)")
    return name


def write_repository(source, out: str | Path, *, backend: str = "python", mode: str = "stream",
                     name: str | None = None, max_batch: int = DEFAULT_MAX_BATCH, instances: int = 1,
                     idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, max_sequences: int = DEFAULT_MAX_SEQUENCES,
                     providers: list[str] | None = None, accelerator: str | None = None, fp16: bool = False,
                     dtype: str = "fp32", opset: int | None = None,
                     plugin_library: str | Path | None = None) -> Repository:
    """Write REPO/<name>/ for `source` (a LoadedModel, exported here, or an ONNX file path) and return it.

    backend python: the graphs and model.py, run in ONNX Runtime on `providers` (default cpu);
    onnxruntime: model.onnx for Triton's ONNX Runtime backend (`accelerator` "tensorrt": its TensorRT
    execution accelerator, fp16 when `fp16`); tensorrt: model.plan, built with the plugin library when
    TensorRT is installed, else the config alone and a note saying how to build the engine."""
    if backend not in BACKENDS or mode not in MODES:
        raise InputError(f"expected --backend in {', '.join(BACKENDS)} and --mode in {', '.join(MODES)}, found "
                         f"{backend!r}, {mode!r}")
    if accelerator not in (None, "tensorrt") or (accelerator and backend != "onnxruntime"):
        raise InputError(f"--accelerator tensorrt is ONNX Runtime's execution accelerator: expected it with "
                         f"--backend onnxruntime, found --accelerator {accelerator} with --backend {backend}")
    if fp16 and not accelerator and backend != "tensorrt":
        raise InputError("--fp16 builds TensorRT kernels in fp16: expected --backend tensorrt or --accelerator "
                         "tensorrt with it (for an fp16 graph, export with --dtype fp16)")
    root = check_output_folder(out, "-o")
    name = _model_name(source, name)
    model_dir = root / name
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="attnx-triton-") as tmp:
        graphs = _graphs(source, mode, Path(tmp), dtype=dtype, opset=opset)
        protos = {role: onnx.load(str(path), load_external_data=False) for role, path in graphs.items()}
        for role, proto in protos.items():
            if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
                raise OnnxFileError(f"{graphs[role]} keeps its weights in an external data file; expected one "
                                    "self-contained file per graph")
        served = protos["full" if mode == "full" else "decode"]
        inputs, outputs = _tensors(served.graph.input), _tensors(served.graph.output)
        states = list(zip(inputs[1:], outputs[1:])) if mode == "stream" else []
        files: dict[str, Path] = {}  # path inside the model folder → source file
        if backend == "python":
            first = protos["full" if mode == "full" else "prefill"]
            logits = _tensors(first.graph.output)[0]
            tokens = [Tensor("input_ids", "TYPE_INT64", (-1, -1))]
            outs = [Tensor("logits", logits.data_type, (-1, -1, logits.dims[-1])),
                    Tensor("next_token", "TYPE_INT64", (-1, 1))]
            if mode == "stream":
                outs.append(Tensor("sequences_held", "TYPE_INT64", (-1, 1)))
            from attnx.check.providers import resolve_providers

            resolve_providers(providers)  # a provider not installed here is refused now, not at server start
            parameters = {"attnx_site_packages": os.pathsep.join(site_packages()), "attnx_mode": mode,
                          "attnx_files": json.dumps({role: f"{role}.onnx" for role in graphs}),
                          "attnx_providers": ",".join(providers or ["cpu"]),
                          "attnx_idle_timeout_s": f"{idle_timeout_s:g}", "attnx_python": sys.version.split()[0]}
            config = model_config(name, backend="python", mode=mode, inputs=tokens, outputs=outs,
                                  max_batch=max_batch if max_batch else 0, instances=instances,
                                  idle_timeout_s=idle_timeout_s, max_sequences=max_sequences, parameters=parameters)
            files[f"{VERSION}/model.py"] = MODEL_PY
            files.update({f"{VERSION}/{role}.onnx": path for role, path in graphs.items()})
        else:
            if mode == "stream" and max_batch == 0:
                raise InputError("the implicit state of --backend onnxruntime/tensorrt is kept per batch slot: "
                                 "expected --max-batch >= 1, found 0")
            config = model_config(name, backend=backend, mode=mode, inputs=inputs, outputs=outputs, states=states,
                                  max_batch=max_batch, instances=instances, idle_timeout_s=idle_timeout_s,
                                  max_sequences=max_sequences, ort_accelerator=accelerator, fp16=fp16)
            graph = graphs["full" if mode == "full" else "decode"]
            if backend == "onnxruntime":
                files[f"{VERSION}/model.onnx"] = graph
            else:
                files.update(_engine(graph, Path(tmp), fp16=fp16, plugin_library=plugin_library,
                                     max_batch=max_batch, notes=notes, target=model_dir / VERSION / "model.plan"))
        text = validated_text(config)
        targets = [model_dir / "config.pbtxt"] + [model_dir / rel for rel in files]
        with atomic_outputs(*targets) as staged:
            staged[0].write_text(text, encoding="utf-8")
            for path, src in zip(staged[1:], files.values()):
                shutil.copyfile(src, path)
    return Repository(root, name, targets, notes)


def _engine(graph: Path, work: Path, *, fp16: bool, plugin_library, max_batch: int, notes: list[str],
            target: Path) -> dict[str, Path]:
    """{"1/model.plan": engine} built in `work`, or {} and a note where TensorRT is not installed."""
    from attnx.plugins.engine import ShapeRange, build_engine, require_tensorrt

    try:
        require_tensorrt()
    except BackendUnavailableError as exc:
        role = "decode" if graph.name.endswith(".decode.onnx") or graph.stem == "decode" else "full"
        notes.append(f"{target} not built: {' '.join(str(exc).split())}. The config is written; on a machine with "
                     f"TensorRT, export the {role} graph (`attnx export MODEL -o m.onnx --mode {role}`) and run "
                     f"`attnx build m.onnx -o {target} --plugins LIB{' --fp16' if fp16 else ''} "
                     f"--shapes batch:1:1:{max_batch}`")
        return {}
    engine = work / "model.plan"
    build_engine(onnx.load(str(graph)), engine, precision="fp16" if fp16 else "fp32", plugin_library=plugin_library,
                 shapes={"batch": ShapeRange(1, 1, max_batch)})
    return {f"{VERSION}/model.plan": engine}
