"""torch → ONNX in attnx form: one custom node per attention call, local functions attached.

`torch.onnx.export(dynamo=True)` with a translation per registered op (from the op registry),
dynamic batch and sequence (checked afterwards: a silently static export is a known
torch.export failure), a choice of dtype and opset.
"""

from __future__ import annotations

import copy
import inspect
import logging
import warnings
from pathlib import Path

import onnx
import torch
from onnxscript import values

import attnx
from attnx.errors import ExportError
from attnx.files import atomic_output, check_output_path
from attnx.exporters import rotary
from attnx.exporters.formats import DEFAULT_OPSET, DTYPE_NAMES, OPSETS
from attnx.exporters.functions import attach_local_functions
from attnx.models.zoo import LoadedModel
from attnx.ops import DOMAIN, REGISTRY, TORCH_OPS, VERSION, register_onnx_schemas

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.float16, torch.bfloat16), strict=True))


def default_opset(module: torch.nn.Module) -> int:
    """18, or the highest `min_opset` a submodule asks for (23: softmax as ONNX Attention)."""
    return max([DEFAULT_OPSET, *(getattr(m, "min_opset", DEFAULT_OPSET) for m in module.modules())])


def _translation(spec):
    """The onnxscript translation of one registered op: a single node in domain attnx."""
    op = values.Opset(DOMAIN, VERSION)[spec.name]

    def translate(*inputs, **attrs):
        attrs = spec.resolve(attrs)
        return op(*inputs, **{a.name: a.to_onnx(attrs[a.name]) for a in spec.attributes})

    return translate


def _dynamic_shapes(module, axes):
    """torch.export Dims, one object per dimension name so inputs sharing a name share the Dim.

    torch.export wants the structure of forward's signature: inputs taken by `*args` nest.
    """
    dims = {name: torch.export.Dim(name) for per_input in axes for name in per_input.values()}
    shapes = [{axis: dims[name] for axis, name in per_input.items()} for per_input in axes]
    params = list(inspect.signature(module.forward).parameters.values())
    for i, p in enumerate(params):
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return (*shapes[:i], tuple(shapes[i:]))
    return tuple(shapes)


def _check_dynamic(model: onnx.ModelProto, axes) -> None:
    for inp, per_input in zip(model.graph.input, axes):
        dims = inp.type.tensor_type.shape.dim
        for axis, name in per_input.items():
            if not dims[axis].dim_param:
                raise ExportError(
                    f"input {inp.name!r} axis {axis} ({name}) came out static ({dims[axis].dim_value}) but "
                    "must be dynamic: torch.export specialised it; look for code that branches on that "
                    "size or uses it as a Python int")


def export(model: LoadedModel, path: str | Path, *, dtype: str = "fp32", opset: int | None = None,
           mode: str = "full") -> onnx.ModelProto:
    """LoadedModel → attnx-form ONNX file at `path`; returns the saved ModelProto.

    `opset` None picks `default_opset(module)`. `mode` (full, prefill, decode) is recorded in
    the file's metadata with the model's name. `path` is checked before the export starts, and the
    file lands whole or not at all (attnx.files).
    """
    check_output_path(path, "ONNX output", make_parents=True)
    proto = to_onnx(model, dtype=dtype, opset=opset, mode=mode)
    save_onnx(proto, path)
    return proto


def save_onnx(proto: onnx.ModelProto, path: str | Path) -> None:
    """Write `proto` to `path` atomically, with any external data file beside it."""
    with atomic_output(path) as staged:
        onnx.save(proto, staged)


def to_onnx(model: LoadedModel, *, dtype: str = "fp32", opset: int | None = None,
            mode: str = "full") -> onnx.ModelProto:
    """LoadedModel → the checked attnx-form ModelProto that `export` writes; writes nothing."""
    opset = default_opset(model.module) if opset is None else opset
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not supported; expected one of {', '.join(map(str, OPSETS))}")
    register_onnx_schemas()
    torch_dtype = DTYPES[dtype]
    module = copy.deepcopy(model.module).to(torch_dtype).eval()
    inputs = tuple(t.to(torch_dtype) if t.is_floating_point() else t for t in model.example_inputs)
    axes = model.axes()
    for t, per_input in zip(inputs, axes):
        if any(t.shape[axis] < 2 for axis in per_input):
            raise ExportError(f"example inputs need batch >= 2 and sequence >= 2 (every dynamic axis: "
                              f"{per_input}) so torch.export keeps them dynamic, got shape {tuple(t.shape)}")
    table = {TORCH_OPS[name]: _translation(spec) for name, spec in REGISTRY.items() if name in TORCH_OPS}
    table.update(rotary.translations(opset))
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    try:
        quiet.setLevel(logging.ERROR)  # per-run notes about torchvision ops that are not installed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, inputs, dynamo=True, opset_version=opset, custom_translation_table=table,
                dynamic_shapes=_dynamic_shapes(module, axes), input_names=model.input_names(), output_names=model.output_names, verbose=False,
                optimize=True)
    except Exception as exc:  # torch's exporter raises many types; keep its message
        raise ExportError(f"torch.onnx.export failed for {model.name}: {exc}") from exc
    finally:
        quiet.setLevel(level)
    proto = attach_local_functions(program.model_proto)
    _check_dynamic(proto, axes)
    meta = {"attnx.version": attnx.__version__, "attnx.model": model.name, "attnx.mode": mode, "attnx.dtype": dtype,
            **model.fingerprint(),  # architecture and weights: check tells another model from a failure
            "attnx.export_seq_len": str(next((inputs[0].shape[axis] for axis, name in axes[0].items()
                                              if name == "seq"), 0))}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto
