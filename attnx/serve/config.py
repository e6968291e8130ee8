"""Triton model configs, built as Triton's ModelConfig protobuf and checked before they are written.

Each config is built with tritonclient's `model_config_pb2`, then written as protobuf text and read
back (`validated_text`): a field Triton does not know, a wrong type or a value out of an enum fails
there, before any file is written. The Python backend keeps the recurrent states and caches itself
(per correlation ID); the ONNX Runtime and TensorRT backends map them to the sequence batcher's
implicit state, so the server keeps them.
"""

from __future__ import annotations

import dataclasses

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from attnx.errors import InputError
from attnx.serve import BACKENDS, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_SEQUENCES, MODES

PLATFORM = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
# the sequence batcher's control inputs, as the Python backend model reads them
CONTROLS = (("START", mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START),
            ("END", mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END),
            ("READY", mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY))
CORRID = "CORRID"
# ONNX TensorProto element types → Triton data types
TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32"}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One graph input or output: its name, Triton data type and dims ([B, ...]; -1 where dynamic)."""
    name: str
    data_type: str
    dims: tuple[int, ...]


def _dtype(name: str) -> int:
    return mc.DataType.Value(name)


def _io(message, tensor: Tensor, batched: bool) -> None:
    message.name = tensor.name
    message.data_type = _dtype(tensor.data_type)
    message.dims.extend(tensor.dims[1:] if batched else tensor.dims)


def _sequence_batching(config: mc.ModelConfig, *, idle_timeout_s: float, max_sequences: int,
                       python_controls: bool) -> mc.ModelSequenceBatching:
    batching = config.sequence_batching
    batching.max_sequence_idle_microseconds = max(1, round(idle_timeout_s * 1e6))
    # oldest: up to max_sequences live at once per instance, the oldest ready requests batched together
    batching.oldest.max_candidate_sequences = max_sequences
    batching.oldest.max_queue_delay_microseconds = 0
    if python_controls:
        for name, kind in CONTROLS:
            control = batching.control_input.add(name=name).control.add(kind=kind)
            control.int32_false_true.extend([0, 1])
        batching.control_input.add(name=CORRID).control.add(
            kind=mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID, data_type=mc.TYPE_UINT64)
    else:  # the implicit state needs START to reset it; READY tells the backend which slots hold a request
        for name, kind in CONTROLS[:1] + CONTROLS[2:]:
            control = batching.control_input.add(name=name).control.add(kind=kind)
            control.int32_false_true.extend([0, 1])
    return batching


def model_config(name: str, *, backend: str, mode: str, inputs: list[Tensor], outputs: list[Tensor],
                 states: list[tuple[Tensor, Tensor]] = (), max_batch: int = DEFAULT_MAX_BATCH, instances: int = 1,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, max_sequences: int = DEFAULT_MAX_SEQUENCES,
                 parameters: dict[str, str] | None = None, ort_accelerator: str | None = None,
                 fp16: bool = False) -> mc.ModelConfig:
    """The ModelConfig of one model.

    `inputs`/`outputs` are what requests carry ([B, ...]; B is Triton's batch dimension when
    max_batch > 0). `states` pairs each decode state input (`past.*`) with its output (`present.*`):
    the sequence batcher's implicit state for onnxruntime and tensorrt, zeros at START (an empty
    prefix). `ort_accelerator` "tensorrt" puts ONNX Runtime's TensorRT execution accelerator in
    front (fp16 when `fp16`)."""
    if backend not in BACKENDS or mode not in MODES:
        raise InputError(f"expected backend in {BACKENDS} and mode in {MODES}, found {backend!r}, {mode!r}")
    if max_batch < 0 or instances < 1 or max_sequences < 1 or idle_timeout_s <= 0:
        raise InputError(f"expected max_batch >= 0, instances >= 1, max_sequences >= 1 and a positive idle "
                         f"timeout, found {max_batch}, {instances}, {max_sequences}, {idle_timeout_s}")
    config = mc.ModelConfig(name=name, max_batch_size=max_batch)
    if backend == "python":
        config.backend = "python"
    else:
        config.platform = PLATFORM[backend]
        config.backend = backend
    batched = max_batch > 0
    for tensor in inputs:
        _io(config.input.add(), tensor, batched)
    for tensor in outputs:
        _io(config.output.add(), tensor, batched)
    if mode == "stream":
        batching = _sequence_batching(config, idle_timeout_s=idle_timeout_s, max_sequences=max_sequences,
                                      python_controls=backend == "python")
        for past, present in states:
            state = batching.state.add(input_name=past.name, output_name=present.name,
                                       data_type=_dtype(past.data_type))
            dims = past.dims[1:] if batched else past.dims
            state.dims.extend(dims)
            # a growing cache starts empty (its dynamic axis 0); a fixed-size state starts as zeros
            state.initial_state.add(name="empty prefix", data_type=state.data_type, zero_data=True,
                                    dims=[0 if d == -1 else d for d in dims])
    elif batched:
        config.dynamic_batching.max_queue_delay_microseconds = 0
    kind = mc.ModelInstanceGroup.KIND_CPU if backend == "python" else mc.ModelInstanceGroup.KIND_GPU
    config.instance_group.add(count=instances, kind=kind)
    if ort_accelerator == "tensorrt":
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = "FP16" if fp16 else "FP32"
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def validated_text(config: mc.ModelConfig) -> str:
    """`config` as protobuf text, after reading it back as a ModelConfig and finding it unchanged."""
    text = text_format.MessageToString(config)
    try:
        parsed = text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise InputError(f"config of {config.name!r} is not a valid Triton ModelConfig: {exc}") from exc
    if parsed != config:
        raise InputError(f"config of {config.name!r} does not read back as written: not a valid Triton ModelConfig")
    missing = [f for f in ("name", "backend") if not getattr(parsed, f)]
    if missing:
        raise InputError(f"config of {config.name!r} lacks {', '.join(missing)}")
    return text


def read_config(text: str) -> mc.ModelConfig:
    """A config.pbtxt's text → ModelConfig; InputError naming the problem when Triton would refuse it."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise InputError(f"expected a Triton ModelConfig in protobuf text, found: {exc}") from exc
