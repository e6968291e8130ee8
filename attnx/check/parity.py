"""Parity of an exported ONNX file against the eager model in float64, or against golden outputs
saved by an earlier run, through Polygraphy: its runners, data loading, NaN/Inf validation and
comparator."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
import torch
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.comparator import Comparator, RunResults

from attnx.check.compare import CompareOptions, deciding_error, polygraphy_logs
from attnx.check.data import DEFAULT_BATCH, DEFAULT_SEED, DEFAULT_SEQ_LENS, draw_shaped, random_inputs
from attnx.check.golden import Golden, check_golden_identity, golden_record, check_reference_shapes, load_inputs, reference_of
from attnx.check.identity import check_same_model, recorded_model
from attnx.check.providers import ORT_NAMES, backend_label, resolve_providers, session_loader
from attnx.check.report import NonFinite, OutputResult, ParityReport
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


def input_meta_of(model: onnx.ModelProto) -> dict[str, tuple]:
    """{input name: (numpy dtype, declared dims)}, dims a name where dynamic."""
    return {i.name: (onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type),
                     [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input}


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


def check_input_shapes(shapes: Mapping[str, Sequence[int]], input_meta: dict[str, tuple], path) -> None:
    """`--input-shapes`: every name an input of the file, of the rank it declares, its fixed dims kept."""
    for name, shape in shapes.items():
        if name not in input_meta:
            raise InputError(f"--input-shapes names input {name!r}: expected an input of {path} "
                             f"({', '.join(input_meta)})")
        dims = input_meta[name][1]
        if len(shape) != len(dims):
            raise InputError(f"--input-shapes {name}:{list(shape)}: expected rank {len(dims)} as {path} declares "
                             f"{name} {dims}, found rank {len(shape)}")
        fixed = [(axis, d, s) for axis, (d, s) in enumerate(zip(dims, shape)) if isinstance(d, int) and d > 0 and d != s]
        if fixed or any(s < 1 for s in shape):
            raise InputError(f"--input-shapes {name}:{list(shape)}: expected dims >= 1 matching the fixed dims of "
                             f"{name} {dims} in {path}")


def feed_length(feed: dict[str, np.ndarray], input_meta: dict[str, tuple]) -> int | None:
    """The sequence length of a feed: the size of the first input's axis the file names `seq`."""
    for name, (_, dims) in input_meta.items():
        if "seq" in dims:
            return int(np.shape(feed[name])[dims.index("seq")])
    return None


@dataclasses.dataclass(frozen=True)
class ParityOptions:
    """What `attnx check` takes in Polygraphy's terms: input shapes by name, inputs loaded from a file,
    golden outputs and which of their runners is the reference, atol, rtol and the error statistic
    overall (name "") and per output, --force for a golden file of another model name, and verbosity
    (-1 quiet, 0, 1 Polygraphy's details)."""

    input_shapes: Mapping[str, Sequence[int]] | None = None
    inputs_path: str | Path | None = None
    golden: Golden | None = None
    reference_runner: str | None = None
    atol: Mapping[str, float] | None = None
    rtol: Mapping[str, float] | None = None
    stat: Mapping[str, str] | None = None
    force: bool = False
    verbosity: int = 0


@dataclasses.dataclass
class ParityCase:
    """What a parity check runs: the file's model, its dtype, the comparison options, and the feeds
    (drawn afresh per length, or loaded) with the sequence length of each (None: not known)."""
    model: onnx.ModelProto
    dtype: str
    lengths: list[int | None]
    seed: int | None
    output_names: list[str]
    input_meta: dict[str, tuple]
    feeds: list[dict[str, np.ndarray]]
    options: CompareOptions
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def tol(self):
        return TOLERANCES[self.dtype]


def _draw(model, loaded: LoadedModel, seq_lens: list[int], batch: int, seed: int,
          shapes: Mapping[str, Sequence[int]], input_meta: dict[str, tuple]) -> tuple[list, list]:
    """(feeds, lengths): one feed per length, each input at (batch, length) unless `shapes` names it; one
    feed in all where `shapes` names every input."""
    names = list(input_meta)
    generator = torch.Generator().manual_seed(seed)
    vocab = getattr(loaded.module, "vocab_size", None)
    examples = dict(zip(names, loaded.example_inputs))
    every = set(shapes) == set(names)
    feeds = []
    for n in ([None] if every else seq_lens):
        feed = {} if every else random_inputs(loaded.example_inputs, names, batch=batch, seq_len=n,
                                              vocab_size=vocab, generator=generator, draw=loaded.draw)
        for name, shape in shapes.items():
            feed[name] = draw_shaped(examples[name], shape, vocab_size=vocab, generator=generator)
        feeds.append({name: feed[name] for name in names})
    # float inputs (images) are drawn in float32; an fp16 file takes them in its own dtype
    feeds = [{name: a.astype(input_meta[name][0]) if a.dtype.kind == "f" else np.asarray(a)
              for name, a in feed.items()} for feed in feeds]
    lengths = [feed_length(feed, input_meta) if every or shapes else n
               for feed, n in zip(feeds, [None] if every else seq_lens)]
    return feeds, lengths


def parity_case(model: onnx.ModelProto, onnx_path, loaded: LoadedModel | None, seq_lens: Sequence[int], batch: int,
                seed: int | None, options: ParityOptions | None = None) -> ParityCase:
    """Check that the file and the model agree on inputs and weights (or, with golden outputs, that
    those come from the file's model and the inputs given), and get the feeds: loaded, or drawn
    afresh for each length (float inputs in the file's dtype)."""
    options = options or ParityOptions()
    seq_lens = list(seq_lens)
    if not seq_lens or any(n < 1 for n in seq_lens) or batch < 1:
        raise InputError(f"sequence lengths and batch must be >= 1, got seq_lens {seq_lens}, batch {batch}")
    input_meta = input_meta_of(model)
    output_names = [o.name for o in model.graph.output]
    dtype = model_dtype(model)
    compare_options = CompareOptions.build(TOLERANCES[dtype], atol=options.atol, rtol=options.rtol,
                                           stat=options.stat, outputs=output_names)
    if loaded is not None:
        _check_inputs_match(model, loaded, onnx_path)
        check_same_model(model, loaded, onnx_path)
    elif options.golden is None or options.inputs_path is None:
        raise InputError("a check without the model needs golden outputs and the inputs they were made from "
                         "(--load-outputs with --load-inputs)")
    notes = []
    if options.inputs_path is not None:
        if options.input_shapes:
            raise InputError("--input-shapes draws inputs at those shapes; --load-inputs gives the inputs: pass one")
        feeds = load_inputs(options.inputs_path, input_meta, onnx_path)
        lengths, seed = [feed_length(feed, input_meta) for feed in feeds], None
        notes.append(f"{len(feeds)} feed(s) loaded from {options.inputs_path}")
    else:
        shapes = dict(options.input_shapes or {})
        check_input_shapes(shapes, input_meta, onnx_path)
        seed = DEFAULT_SEED if seed is None else seed
        feeds, lengths = _draw(model, loaded, seq_lens, batch, seed, shapes, input_meta)
    if options.golden is not None:
        notes += check_golden_identity(options.golden, model, onnx_path, feeds, force=options.force)
    return ParityCase(model, dtype, lengths, seed, output_names, input_meta, feeds, compare_options, notes)


def _non_finite(results: RunResults, case: ParityCase) -> list[NonFinite]:
    """Polygraphy's NaN and Inf check of every output (Comparator.validate), and, where it fails, how
    many values of which output at which length are not finite."""
    if Comparator.validate(results, check_inf=True, check_nan=True):
        return []
    found = []
    for runner, iterations in results.items():
        for n, outputs in zip(case.lengths, iterations):
            for name, array in outputs.items():
                array = np.asarray(array)
                if array.dtype.kind != "f":
                    continue
                nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
                if nan or inf:
                    found.append(NonFinite(runner, name, n, list(array.shape), nan, inf))
    return found


def _run(runner, case: ParityCase, loaded: LoadedModel | None) -> RunResults:
    """`runner` over the case's feeds; where it fails and the eager model is here, the eager model runs
    the same feeds, so that inputs the model itself rejects are said as such (InputError)."""
    try:
        return Comparator.run([runner], data_loader=case.feeds)
    except Exception:
        if loaded is not None:
            eager = EagerFloat64Runner(loaded.module, case.input_meta, case.output_names)
            with eager:
                for feed in case.feeds:
                    eager.infer(feed)
        raise


def _report(case: ParityCase, loaded, onnx_path, backend, reference, outputs, candidate, reference_results=None,
            non_finite=()) -> ParityReport:
    model = loaded.name if loaded is not None else (recorded_model(case.model) or "model not recorded")
    runs = RunResults([*candidate.items(), *(reference_results.items() if reference_results is not None else [])])
    record = golden_record(case.model, onnx_path, dtype=case.dtype, seed=case.seed, feeds=case.feeds,
                           reference=next(iter(reference_results.keys())) if reference_results is not None else None)
    return ParityReport(model, str(onnx_path), backend, reference, case.dtype, case.seed, _declared_shapes(case.model),
                        outputs, list(non_finite), feeds=case.feeds, run_results=runs, record=record)


def compare_with_reference(runner, case: ParityCase, loaded: LoadedModel | None, onnx_path, backend: str,
                           progress: Callable[[str], None], options: ParityOptions | None = None) -> ParityReport:
    """Run `runner` (a Polygraphy runner over the file) on the case's feeds; stop there (a failed report)
    where an output is NaN or Inf; else hold it to the reference: the eager model in float64 on the
    same feeds, or the golden outputs' reference runner. Relative errors are taken against the reference."""
    options = options or ParityOptions()
    for note in case.notes:
        progress(note)
    with polygraphy_logs(options.verbosity):
        candidate = _run(runner, case, loaded)
        non_finite = _non_finite(candidate, case)
        if non_finite:
            return _report(case, loaded, onnx_path, backend, "none (stopped at values not finite)", [], candidate,
                           non_finite=non_finite)
        got_iterations = list(candidate.values())[0]
        if options.golden is not None:
            name, iterations = reference_of(options.golden, options.reference_runner)
            check_reference_shapes(name, iterations, got_iterations, case.output_names, options.golden, onnx_path,
                                   case.lengths)
            reference, label = RunResults([(name, iterations)]), f"{name} ({options.golden.path})"
            progress(f"reference: runner {name} of {options.golden.path} ({len(iterations)} iteration(s); runners "
                     f"there: {', '.join(options.golden.runners())})")
        else:
            eager = EagerFloat64Runner(loaded.module, case.input_meta, case.output_names)
            reference, label = Comparator.run([eager], data_loader=case.feeds), eager.name
        non_finite = _non_finite(reference, case)
        if non_finite:
            return _report(case, loaded, onnx_path, backend, label, [], candidate, reference, non_finite)
        both = RunResults([*candidate.items(), *reference.items()])
        accuracy = Comparator.compare_accuracy(both, comparisons=[(0, 1)], compare_func=case.options.func())
    iterations = next(iter(accuracy[0].values()))
    ref_iterations = list(reference.values())[0]
    outputs = []
    for n, it_result, got, ref in zip(case.lengths, iterations, got_iterations, ref_iterations):
        for name in case.output_names:
            r = it_result.get(name)
            if r is None or isinstance(r, bool):
                raise InputError(f"output {name!r}{f' at seq {n}' if n else ''}: {backend} gives "
                                 f"{list(np.shape(got[name]))}, the reference {label} {list(np.shape(ref[name]))}")
            atol, rtol, stat = case.options.for_output(name)
            excess = deciding_error(got[name], ref[name], r, atol, rtol, stat)
            outputs.append(OutputResult(name, n, list(np.shape(got[name])), float(r.max_absdiff), float(r.max_reldiff),
                                        atol, rtol, bool(r), stat, excess))
        at = f"seq {n}" if n is not None else "feed"
        progress(f"{at}: {'ok' if all(it_result[o] for o in case.output_names) else 'MISMATCH'}")
    return _report(case, loaded, onnx_path, backend, label, outputs, candidate, reference)


def check_parity(onnx_path: str | Path, loaded: LoadedModel | None, *, seq_lens: Sequence[int] = DEFAULT_SEQ_LENS,
                 batch: int = DEFAULT_BATCH, seed: int | None = None, providers: Sequence[str] | None = None,
                 plugin_library: str | Path | None = None, options: ParityOptions | None = None,
                 progress: Callable[[str], None] = lambda msg: None) -> ParityReport:
    """Run the file in ONNX Runtime and hold it to the eager model in float64 on the same fresh inputs
    (or, with `options`, to golden outputs on loaded inputs, with no model: `loaded` None); the file
    is read once.

    providers: Polygraphy-style ONNX Runtime providers in priority order (tensorrt, cuda, cpu; default
    cpu; attnx.check.providers), `plugin_library` tensorrt's; an fp16 file enables TensorRT's fp16."""
    model = load_onnx(onnx_path)
    dtype = model_dtype(model)
    resolved = resolve_providers(providers, plugin_library=plugin_library, fp16=dtype == "fp16")
    on_tensorrt = resolved[0][0] == ORT_NAMES["tensorrt"]
    if dtype == "bf16" and resolved[0][0] == ORT_NAMES["cpu"]:
        raise BackendUnavailableError(
            "ONNX Runtime's CPU provider has no bfloat16 kernels (MatMul, LayerNorm); a bf16 file needs "
            "a GPU backend: check it with --backend trt on a machine with TensorRT")
    plugin_ops = sorted({n.op_type for n in model.graph.node if n.domain == TRT_DOMAIN})
    if plugin_ops and not on_tensorrt:
        raise OnnxFileError(f"{onnx_path}: expected a file ONNX Runtime runs (attnx, ort or portable form), found "
                            f"the TensorRT form (nodes {', '.join(plugin_ops)} in domain {TRT_DOMAIN}): check it "
                            "with --backend trt (or --providers tensorrt), or check the file `optimize --target trt` "
                            "was given")
    case = parity_case(model, onnx_path, loaded, seq_lens, batch, seed, options)
    label = backend_label(resolved)
    onnxrt = OnnxrtRunner(session_loader(model.SerializeToString(), resolved, where=str(onnx_path)), name=label)
    return compare_with_reference(onnxrt, case, loaded, onnx_path, label, progress, options)
