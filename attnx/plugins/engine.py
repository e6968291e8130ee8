"""TensorRT engines with the attnx plugin library, through Polygraphy's loaders.

attnx's own steps are loaders too, named as Polygraphy names its own (`XFromY`) and callable as
its own are (Polygraphy's loaders and runners take them as they take theirs): each takes its
input as an object or as a loader that returns one, and does its work only when called, so
they compose lazily and an ONNX file read once feeds every step:

    SaveEngine(EngineFromOnnx(TrtFormFromOnnx(model), plugin_library=lib, seq=..., batch=...), path)

Nothing here compares outputs (attnx/check runs parity on these engines). Nothing here runs
without TensorRT: `require_tensorrt()` comes first wherever TensorRT is needed and says what is
missing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

from attnx.errors import BackendUnavailableError, InputError
from attnx.files import atomic_output, check_output_path

PRECISIONS = ("fp32", "fp16", "bf16")
# axes of attnx's exported graphs (attnx/exporters): `past` is the decode graph's state length
KNOWN_AXES = ("batch", "seq", "past")


def _not_installed(why: str) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"TensorRT is not installed here ({why}); building or running an engine needs TensorRT 10 with its "
        "runtime libraries, e.g. `pip install -e '.[trt]'` where NVIDIA's package host is reachable, or a "
        "TensorRT install on LD_LIBRARY_PATH")


def require_tensorrt():
    """The `tensorrt` module, or BackendUnavailableError saying why it cannot be used here.

    Two ways to fail: the module is absent (ImportError), or its bindings import but TensorRT's
    runtime libraries (libnvinfer) do not load, which shows at import (OSError, ImportError) or only
    when the first object is made; a Logger is made here so that it shows now."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: bindings present, runtime libraries missing
        raise _not_installed(f"import tensorrt failed: {exc}") from None
    try:
        tensorrt.Logger(tensorrt.Logger.ERROR)
    except Exception as exc:  # AttributeError from a stub, OSError/RuntimeError from a missing libnvinfer
        raise _not_installed(f"the tensorrt module imports from {getattr(tensorrt, '__file__', '?')} but its "
                             f"runtime does not load: {type(exc).__name__}: {exc}") from None
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


def parse_shapes(items: Sequence[str]) -> dict[str, ShapeRange]:
    """`--shapes` values: `axis:min:opt:max` for a dynamic axis (batch, seq, past), or a bare
    `min:opt:max` for seq. Returns {axis: ShapeRange}."""
    out: dict[str, ShapeRange] = {}
    for item in items:
        parts = item.split(":")
        if len(parts) == 3:
            axis, text = "seq", item
        elif len(parts) == 4:
            axis, text = parts[0], ":".join(parts[1:])
        else:
            raise InputError(f"--shapes {item!r}: expected axis:min:opt:max (axis one of {', '.join(KNOWN_AXES)}) "
                             "or min:opt:max for seq")
        if axis not in KNOWN_AXES:
            raise InputError(f"--shapes {item!r}: unknown axis {axis!r}; expected one of {', '.join(KNOWN_AXES)}")
        if axis in out:
            raise InputError(f"--shapes gives axis {axis!r} twice")
        out[axis] = ShapeRange.parse(text, f"--shapes {axis}")
    return out


def optimization_profile(model, seq: ShapeRange, batch: ShapeRange, axes: Mapping[str, ShapeRange] | None = None):
    """A Polygraphy Profile over the model's inputs: `batch` axes take `batch`, `seq`/`past` take `seq`,
    unless `axes` names them."""
    from polygraphy.backend.trt import Profile

    ranges = {"batch": batch, "seq": seq, "past": seq, **dict(axes or {})}
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


def _invoke(obj):
    """`obj()` for a loader, else `obj` itself (Polygraphy's rule for a loader's input)."""
    return obj() if callable(obj) else obj


class TrtFormFromOnnx:
    """Takes `model`: an onnx.ModelProto in attnx or TensorRT form, or a callable returning one.
    Returns the onnx.ModelProto in TensorRT form (plugin nodes, DESIGN.md): `model` itself when it
    has no attnx nodes, else a retargeted copy (`model` is left as it was)."""

    def __init__(self, model):
        self._model = model

    def __call__(self):
        import onnx

        from attnx.surgeon.retarget import retarget

        model = _invoke(self._model)
        if not any(n.domain == "attnx" for n in model.graph.node):
            return model
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # retarget rewrites the nodes it is given
        return retarget(copy, "trt")


class EngineFromOnnx:
    """Takes `model`: an onnx.ModelProto in TensorRT form, or a callable returning one (e.g.
    `TrtFormFromOnnx`); `plugin_library`: the path of libattnx_plugins.so; `precision`: one of
    PRECISIONS; `seq`, `batch`: the ShapeRange of those axes, and `axes` {axis: ShapeRange} for any
    other (`past`: as `seq` unless given). Returns a tensorrt.ICudaEngine: the plugins loaded, the
    model parsed from memory, built with one optimisation profile."""

    def __init__(self, model, *, plugin_library: str | Path, precision: str = "fp32", seq: ShapeRange,
                 batch: ShapeRange, axes: Mapping[str, ShapeRange] | None = None):
        require_tensorrt()
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r} is not supported; expected one of {', '.join(PRECISIONS)}")
        self._model, self._library, self._precision = model, str(plugin_library), precision
        self._seq, self._batch, self._axes = seq, batch, axes

    def __call__(self):
        from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, LoadPlugins, NetworkFromOnnxBytes

        model = _invoke(self._model)
        network = LoadPlugins(plugins=[self._library], obj=NetworkFromOnnxBytes(model.SerializeToString()))
        config = CreateConfig(fp16=self._precision == "fp16", bf16=self._precision == "bf16",
                              profiles=[optimization_profile(model, self._seq, self._batch, self._axes)])
        return EngineFromNetwork(network, config=config)()


DEFAULT_SHAPES = {"batch": ShapeRange(1, 1, 8), "seq": ShapeRange(1, 128, 1024)}


def build_engine(model, out: str | Path, *, precision: str = "fp32", plugin_library: str | Path | None = None,
                 shapes: Mapping[str, ShapeRange] | None = None) -> Path:
    """Build the engine of `model` (an onnx.ModelProto in attnx or TensorRT form, or a callable
    returning one) and serialise it to `out`.

    shapes: {axis: ShapeRange}; batch and seq default to DEFAULT_SHAPES, past to seq. Returns `out`,
    checked before the build; the engine lands there whole or not at all (attnx.files)."""
    require_tensorrt()
    check_output_path(out, "engine output", make_parents=True)
    from polygraphy.backend.trt import SaveEngine

    from attnx.plugins.library import library_path

    library = library_path(plugin_library)
    ranges = {**DEFAULT_SHAPES, **dict(shapes or {})}
    engine = EngineFromOnnx(TrtFormFromOnnx(model), precision=precision, plugin_library=library,
                            seq=ranges["seq"], batch=ranges["batch"], axes=ranges)
    with atomic_output(out) as staged:
        SaveEngine(engine, path=str(staged))()
    return Path(out)
