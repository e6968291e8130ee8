"""Parity of an exported ONNX file against the eager model in float64, through Polygraphy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import torch
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.comparator import Comparator
from polygraphy.logger import G_LOGGER

from attnx.check.compare import compare_func
from attnx.check.data import DEFAULT_BATCH, DEFAULT_SEED, DEFAULT_SEQ_LENS, random_inputs
from attnx.check.identity import check_same_model
from attnx.check.report import OutputResult, ParityReport
from attnx.check.runners import EagerFloat64Runner
from attnx.check.tolerances import TOLERANCES
from attnx.errors import BackendUnavailableError, InputError, OnnxFileError
from attnx.exporters.functions import verify_local_functions
from attnx.models.zoo import LoadedModel
from attnx.ops import register_onnx_schemas
from attnx.surgeon.graph import read_model, validate_input_model
from attnx.surgeon.retarget import TRT_DOMAIN

_ONNX_DTYPE = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file; a missing or malformed file says what is wrong with it."""
    path = Path(path)
    model = read_model(path)
    if not model.graph.node:
        raise OnnxFileError(f"{path} holds no graph nodes: expected an exported model")
    validate_input_model(model, path)
    register_onnx_schemas()
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise OnnxFileError(f"{path} fails the ONNX checker: {exc}") from exc
    try:
        verify_local_functions(model)
    except OnnxFileError as exc:
        raise OnnxFileError(f"{path}: {exc}") from exc
    return model


def model_dtype(model: onnx.ModelProto) -> str:
    """The float dtype the file was exported in: attnx metadata, else the first float initializer."""
    for entry in model.metadata_props:
        if entry.key == "attnx.dtype":
            return entry.value
    for init in model.graph.initializer:
        if init.data_type in _ONNX_DTYPE:
            return _ONNX_DTYPE[init.data_type]
    return "fp32"


def _declared_shapes(model: onnx.ModelProto) -> dict[str, list]:
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}


def _check_inputs_match(model: onnx.ModelProto, loaded: LoadedModel, path) -> list[str]:
    declared = _declared_shapes(model)
    names = list(declared)
    if len(names) != len(loaded.example_inputs):
        raise InputError(f"{path} takes {len(names)} inputs ({', '.join(names)}), the model "
                         f"{loaded.name} takes {len(loaded.example_inputs)}")
    for name, example in zip(names, loaded.example_inputs):
        if len(declared[name]) != example.dim():
            raise InputError(f"input {name!r}: the ONNX file expects rank {len(declared[name])} "
                             f"{declared[name]}, the model {loaded.name} takes rank {example.dim()} "
                             f"{list(example.shape)}")
    elem_types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    for name, example in zip(names, loaded.example_inputs):
        file_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_types[name])
        if (file_dtype.kind == "f") != example.is_floating_point():
            raise InputError(f"input {name!r}: the ONNX file expects {file_dtype}, the model {loaded.name} takes "
                             f"{str(example.dtype).removeprefix('torch.')}")
    return names


@dataclasses.dataclass
class ParityCase:
    """What a parity check runs: the file's model, its dtype and tolerance, and fresh inputs per length."""
    model: onnx.ModelProto
    dtype: str
    seq_lens: list[int]
    seed: int
    output_names: list[str]
    input_meta: dict[str, tuple]
    feeds: list[dict[str, np.ndarray]]

    @property
    def tol(self):
        return TOLERANCES[self.dtype]


def parity_case(model: onnx.ModelProto, onnx_path, loaded: LoadedModel, seq_lens: Sequence[int], batch: int,
                seed: int | None) -> ParityCase:
    """Check that the file and the model agree on inputs and weights, and draw fresh inputs for each
    length (float inputs in the file's dtype)."""
    seq_lens = list(seq_lens)
    if not seq_lens or any(n < 1 for n in seq_lens) or batch < 1:
        raise InputError(f"sequence lengths and batch must be >= 1, got seq_lens {seq_lens}, batch {batch}")
    names = _check_inputs_match(model, loaded, onnx_path)
    check_same_model(model, loaded, onnx_path)
    seed = DEFAULT_SEED if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    vocab = getattr(loaded.module, "vocab_size", None)
    input_meta = {i.name: (onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type),
                           [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
                  for i in model.graph.input}
    feeds = [random_inputs(loaded.example_inputs, names, batch=batch, seq_len=n, vocab_size=vocab,
                           generator=generator, draw=loaded.draw) for n in seq_lens]
    # float inputs (images) are drawn in float32; an fp16 file takes them in its own dtype
    feeds = [{name: a.astype(input_meta[name][0]) if a.dtype.kind == "f" else np.asarray(a)
              for name, a in feed.items()} for feed in feeds]
    return ParityCase(model, model_dtype(model), seq_lens, seed, [o.name for o in model.graph.output],
                      input_meta, feeds)


def compare_with_eager(runner, case: ParityCase, loaded: LoadedModel, onnx_path, backend: str,
                       progress: Callable[[str], None]) -> ParityReport:
    """Run `runner` (a Polygraphy runner over the file) and the eager model in float64 on the case's
    inputs; relative errors are taken against the float64 reference."""
    eager = EagerFloat64Runner(loaded.module, case.input_meta, case.output_names)
    tol = case.tol
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        try:
            results = Comparator.run([runner, eager], data_loader=case.feeds)
        except Exception:
            with eager:  # the backend failed first: an InputError here when the model rejects the inputs too
                for feed in case.feeds:
                    eager.infer(feed)
            raise
        accuracy = Comparator.compare_accuracy(results, comparisons=[(0, 1)], compare_func=compare_func(tol))
    iterations = next(iter(accuracy[0].values()))
    outputs = []
    for n, it_result, out in zip(case.seq_lens, iterations, results[0][1]):
        for name in case.output_names:
            r = it_result[name]
            outputs.append(OutputResult(name, n, list(out[name].shape), float(r.max_absdiff),
                                        float(r.max_reldiff), tol.atol, tol.rtol, bool(r)))
        progress(f"seq {n}: {'ok' if all(it_result[o] for o in case.output_names) else 'MISMATCH'}")
    return ParityReport(loaded.name, str(onnx_path), backend, "eager-float64", case.dtype, case.seed,
                        _declared_shapes(case.model), outputs)


def check_parity(onnx_path: str | Path, loaded: LoadedModel, *, seq_lens: Sequence[int] = DEFAULT_SEQ_LENS,
                 batch: int = DEFAULT_BATCH, seed: int | None = None,
                 progress: Callable[[str], None] = lambda msg: None) -> ParityReport:
    """Run the file in ONNX Runtime (CPU) and the eager model in float64 on the same fresh inputs; the
    file is read once."""
    model = load_onnx(onnx_path)
    if model_dtype(model) == "bf16":
        raise BackendUnavailableError(
            "ONNX Runtime's CPU provider has no bfloat16 kernels (MatMul, LayerNorm); a bf16 file needs "
            "a GPU backend: check it with --backend trt on a machine with TensorRT")
    plugin_ops = sorted({n.op_type for n in model.graph.node if n.domain == TRT_DOMAIN})
    if plugin_ops:
        raise OnnxFileError(f"{onnx_path}: expected a file ONNX Runtime runs (attnx, ort or portable form), found "
                            f"the TensorRT form (nodes {', '.join(plugin_ops)} in domain {TRT_DOMAIN}): check it "
                            "with --backend trt, or check the file `optimize --target trt` was given")
    case = parity_case(model, onnx_path, loaded, seq_lens, batch, seed)
    onnxrt = OnnxrtRunner(SessionFromOnnx(model.SerializeToString(), providers=["cpu"]), name="onnxruntime-cpu")
    return compare_with_eager(onnxrt, case, loaded, onnx_path, "onnxruntime-cpu", progress)
