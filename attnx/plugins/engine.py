"""TensorRT engines through Polygraphy's loaders: build with the attnx plugin library, run for parity.

Nothing here runs without TensorRT: `require_tensorrt()` is the first step of every path and
says what is missing. The ONNX file is taken in TensorRT form (plugin nodes, DESIGN.md); a file
still in attnx form is retargeted first (`trt_form_path`).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

from attnx.errors import BackendUnavailableError, InputError

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


def trt_form_path(onnx_path: str | Path, workdir: str | Path) -> Path:
    """`onnx_path` itself when it has no attnx nodes; else its TensorRT form written into `workdir`."""
    import onnx

    from attnx.surgeon.retarget import retarget

    model = onnx.load(str(onnx_path))
    if not any(n.domain == "attnx" for n in model.graph.node):
        return Path(onnx_path)
    out = Path(workdir) / (Path(onnx_path).stem + ".trt.onnx")
    onnx.save(retarget(model, "trt"), str(out))
    return out


def engine_loader(onnx_path: str | Path, *, precision: str, plugin_library: str | Path, seq: ShapeRange,
                  batch: ShapeRange, axes: Mapping[str, ShapeRange] | None = None):
    """A lazy Polygraphy loader for the engine of a TensorRT-form file: plugins loaded, network parsed,
    config with one profile (`seq`, `batch`, and any other axis in `axes`)."""
    require_tensorrt()
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, LoadPlugins, NetworkFromOnnxPath

    from attnx.check.parity import load_onnx

    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not supported; expected one of {', '.join(PRECISIONS)}")
    model = load_onnx(onnx_path)
    network = LoadPlugins(plugins=[str(plugin_library)], obj=NetworkFromOnnxPath(str(onnx_path)))
    config = CreateConfig(fp16=precision == "fp16", bf16=precision == "bf16",
                          profiles=[optimization_profile(model, seq, batch, axes)])
    return EngineFromNetwork(network, config=config)


DEFAULT_SHAPES = {"batch": ShapeRange(1, 1, 8), "seq": ShapeRange(1, 128, 1024)}


def build_engine(onnx_path: str | Path, out: str | Path, *, precision: str = "fp32",
                 plugin_library: str | Path | None = None, shapes: Mapping[str, ShapeRange] | None = None) -> Path:
    """Build the engine of `onnx_path` (attnx or TensorRT form) and serialise it to `out`.

    shapes: {axis: ShapeRange}; batch and seq default to DEFAULT_SHAPES, past to seq. Returns `out`."""
    require_tensorrt()
    from polygraphy.backend.trt import SaveEngine

    from attnx.plugins.library import library_path

    library = library_path(plugin_library)
    ranges = {**DEFAULT_SHAPES, **dict(shapes or {})}
    with tempfile.TemporaryDirectory(prefix="attnx-build-") as tmp:
        path = trt_form_path(onnx_path, tmp)
        loader = engine_loader(path, precision=precision, plugin_library=library, seq=ranges["seq"],
                               batch=ranges["batch"], axes=ranges)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        SaveEngine(loader, path=str(out))()
    return Path(out)


def check_trt(onnx_path: str | Path, loaded, *, seq_lens: Sequence[int] | None = None, batch: int = 2,
              seed: int | None = None, plugin_library: str | Path | None = None,
              progress: Callable[[str], None] = lambda msg: None):
    """`attnx check --backend trt`: the file as a TensorRT engine (Polygraphy TrtRunner, the attnx plugin
    library loaded) vs the eager model in float64, on the same fresh inputs; the twin of
    `attnx.check.parity.check_parity` (same arguments, same ParityReport). The engine is built in the
    file's dtype with one profile covering batch and every length in `seq_lens`."""
    require_tensorrt()
    from polygraphy.backend.trt import TrtRunner

    from attnx.check.parity import DEFAULT_SEQ_LENS, compare_with_eager, load_onnx, parity_case
    from attnx.plugins.library import library_path

    library = library_path(plugin_library)
    model = load_onnx(onnx_path)
    case = parity_case(model, onnx_path, loaded, seq_lens or DEFAULT_SEQ_LENS, batch, seed)
    longest = max(case.seq_lens)
    with tempfile.TemporaryDirectory(prefix="attnx-check-trt-") as tmp:
        path = trt_form_path(onnx_path, tmp)
        loader = engine_loader(path, precision=case.dtype, plugin_library=library,
                               seq=ShapeRange(min(case.seq_lens), longest, longest),
                               batch=ShapeRange(batch, batch, batch))
        return compare_with_eager(TrtRunner(loader, name="tensorrt"), case, loaded, onnx_path, "tensorrt",
                                  progress)
