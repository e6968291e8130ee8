"""TensorRT engines through Polygraphy's loaders: build with the attnx plugin library, run for parity.

Nothing here runs without TensorRT: `require_tensorrt()` is the first step of every path and
says what is missing. The ONNX file is taken in TensorRT form (plugin nodes, DESIGN.md); a file
still in attnx form is retargeted first.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from attnx.errors import BackendUnavailableError, InputError

PRECISIONS = ("fp32", "fp16", "bf16")


def require_tensorrt():
    """The `tensorrt` module, or BackendUnavailableError saying why it cannot be used here."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: bindings present, runtime libraries missing
        raise BackendUnavailableError(
            f"TensorRT is not installed here (import tensorrt failed: {exc}); building or running an engine "
            "needs TensorRT 10 with its runtime libraries, e.g. `pip install -e '.[trt]'` where NVIDIA's "
            "package host is reachable, or a TensorRT install on LD_LIBRARY_PATH") from None
    return tensorrt


@dataclasses.dataclass(frozen=True)
class ShapeRange:
    """min:opt:max of one dynamic axis."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str, what: str) -> "ShapeRange":
        try:
            low, opt, high = (int(x) for x in text.split(":"))
        except ValueError:
            raise InputError(f"{what}: expected min:opt:max with three integers, got {text!r}") from None
        if not 1 <= low <= opt <= high:
            raise InputError(f"{what}: expected 1 <= min <= opt <= max, got {text!r}")
        return cls(low, opt, high)


def optimization_profile(model, seq: ShapeRange, batch: ShapeRange):
    """A Polygraphy Profile over the model's inputs: `batch` axes take `batch`, `seq`/`past` take `seq`."""
    from polygraphy.backend.trt import Profile

    ranges = {"batch": batch, "seq": seq, "past": seq}
    profile = Profile()
    for inp in model.graph.input:
        shape = {"min": [], "opt": [], "max": []}
        for d in inp.type.tensor_type.shape.dim:
            if d.dim_param and d.dim_param not in ranges:
                raise InputError(f"input {inp.name!r} has a dynamic axis {d.dim_param!r} that attnx build cannot "
                                 f"size; known axes: {', '.join(ranges)}")
            r = ranges.get(d.dim_param)
            for key in shape:
                shape[key].append(getattr(r, key) if r else d.dim_value)
        profile.add(inp.name, **shape)
    return profile


def engine_loader(onnx_path: str | Path, *, precision: str, plugin_library: str | Path, seq: ShapeRange,
                  batch: ShapeRange):
    """A lazy Polygraphy loader for the engine: plugins loaded, network parsed, config with a profile."""
    require_tensorrt()
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, LoadPlugins, NetworkFromOnnxPath

    from attnx.check.parity import load_onnx

    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not supported; expected one of {', '.join(PRECISIONS)}")
    model = load_onnx(onnx_path)
    network = LoadPlugins(plugins=[str(plugin_library)], obj=NetworkFromOnnxPath(str(onnx_path)))
    config = CreateConfig(fp16=precision == "fp16", bf16=precision == "bf16",
                          profiles=[optimization_profile(model, seq, batch)])
    return EngineFromNetwork(network, config=config)


def build_engine(onnx_path: str | Path, out: str | Path, **kwargs) -> Path:
    """Build and serialise the engine; kwargs as `engine_loader`. Returns `out`."""
    from polygraphy.backend.trt import SaveEngine

    SaveEngine(engine_loader(onnx_path, **kwargs), path=str(out))()
    return Path(out)
