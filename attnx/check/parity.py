"""Parity of an exported ONNX file against the eager model in float64, through Polygraphy."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import torch
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.comparator import Comparator
from polygraphy.logger import G_LOGGER

from attnx.check.compare import compare_func
from attnx.check.data import DEFAULT_BATCH, DEFAULT_SEQ_LENS, random_inputs
from attnx.check.report import OutputResult, ParityReport
from attnx.check.runners import EagerFloat64Runner
from attnx.check.tolerances import TOLERANCES
from attnx.errors import BackendUnavailableError, InputError, OnnxFileError
from attnx.exporters.functions import verify_local_functions
from attnx.models.zoo import LoadedModel
from attnx.ops import register_onnx_schemas

_ONNX_DTYPE = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file; a missing or malformed file says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"ONNX file {str(path)!r} does not exist")
    try:
        model = onnx.load(path)
    except Exception as exc:
        raise OnnxFileError(f"{path} is not a readable ONNX model: expected a serialized ModelProto, "
                            f"the parser said: {exc}") from exc
    if not model.graph.node:
        raise OnnxFileError(f"{path} holds no graph nodes: expected an exported model")
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


def check_same_weights(model: onnx.ModelProto, loaded: LoadedModel, path) -> None:
    """Refuse to compare a file with a model whose weights are not the ones it was exported from."""
    exported = {p.key: p.value for p in model.metadata_props}.get("attnx.weights_sha256")
    if exported is not None and exported != loaded.fingerprint():
        raise InputError(f"{path} was exported from other weights than {loaded.name} has now (weights sha256 "
                         f"{exported[:12]}… in the file, {loaded.fingerprint()[:12]}… in the model): a factory "
                         "must build the same weights every call (seed it), or the file is from another model")


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
    check_same_weights(model, loaded, onnx_path)
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
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
        results = Comparator.run([runner, eager], data_loader=case.feeds)
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
    case = parity_case(model, onnx_path, loaded, seq_lens, batch, seed)
    onnxrt = OnnxrtRunner(SessionFromOnnx(model.SerializeToString(), providers=["cpu"]), name="onnxruntime-cpu")
    return compare_with_eager(onnxrt, case, loaded, onnx_path, "onnxruntime-cpu", progress)
