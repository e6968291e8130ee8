"""Inputs and golden outputs in Polygraphy's own JSON formats, so that a CI image with no model code
can check a file against outputs saved elsewhere.

- inputs: a list of feed dicts {input name: array}, one per iteration, as `polygraphy run
  --save-inputs` writes and `--load-inputs` reads (polygraphy.json).
- outputs: Polygraphy's RunResults, as `polygraphy run --save-outputs` writes, holding every runner
  of the run (the file's runtime and the eager model in float64). Beside RunResults' own keys attnx
  records, under "attnx", what the outputs came from: the model and fingerprint the checked file
  records, the file, its dtype, the seed and the sha256 of the inputs. Polygraphy reads the file
  and ignores that key; attnx uses it to refuse outputs of another model or other inputs.

Outputs are only meaningful with the inputs that produced them, so loading outputs needs the inputs
file too (`--load-inputs`): the recorded inputs digest must match it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from polygraphy.comparator import RunResults
from polygraphy.exception import PolygraphyException
from polygraphy.json import from_json, to_json
from polygraphy.logger import G_LOGGER

from attnx.check.identity import MODEL_KEY, model_record
from attnx.errors import InputError
from attnx.files import write_text
from attnx.models.fingerprint import ARCHITECTURE_KEY, LEGACY_WEIGHTS_KEY, WEIGHTS_KEY

GOLDEN_KEY = "attnx"
GOLDEN_FORMAT = 1
EAGER_RUNNER = "eager-float64"  # the reference a saved run holds, and the one a load picks by default


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _read_polygraphy_json(path: str | Path, what: str, decode):
    """`decode(text)` of the file at `path`, every failure an InputError saying what was expected."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path}: expected a readable Polygraphy JSON file, found {_first_line(exc)}") from exc
    try:
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):  # Polygraphy's own critical line would repeat ours
            return text, decode(text)
    except (json.JSONDecodeError, PolygraphyException, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{what} {path}: expected Polygraphy's JSON, found that it does not decode: "
                         f"{_first_line(exc)}") from exc


def inputs_sha256(feeds: list[dict[str, np.ndarray]]) -> str:
    """sha256 of the feeds: per iteration, per input in order, the name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for feed in feeds:
        for name, array in feed.items():
            array = np.ascontiguousarray(array)
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def save_inputs(feeds: list[dict[str, np.ndarray]], path: str | Path) -> None:
    """The feeds as `polygraphy run --save-inputs` writes them (a JSON list of feed dicts), atomically."""
    write_text(path, to_json([dict(feed) for feed in feeds]) + "\n")


def load_inputs(path: str | Path, input_meta: dict[str, tuple], onnx_path) -> list[dict[str, np.ndarray]]:
    """The feeds of a Polygraphy inputs file (a list of feed dicts, or one feed dict), checked against the
    inputs the ONNX file declares (`input_meta`: {name: (numpy dtype, declared dims)}): the same names,
    ranks and fixed dims, and dtypes of the same kind (a float or integer input is cast to the file's
    width, as an fp16 file takes fp32 inputs)."""
    _, loaded = _read_polygraphy_json(path, "--load-inputs", from_json)
    feeds = [loaded] if isinstance(loaded, dict) else loaded
    if not isinstance(feeds, list) or not feeds or not all(isinstance(f, dict) for f in feeds):
        raise InputError(f"--load-inputs {path}: expected a list of feed dicts ({{input name: array}}) as "
                         f"`polygraphy run --save-inputs` writes, found {type(loaded).__name__}"
                         f"{' (empty)' if isinstance(feeds, list) and not feeds else ''}")
    checked = []
    for index, feed in enumerate(feeds):
        where = f"--load-inputs {path}, feed {index}"
        if set(feed) != set(input_meta):
            raise InputError(f"{where}: expected the inputs {onnx_path} takes ({', '.join(input_meta)}), found "
                             f"{', '.join(map(str, feed)) or 'none'}")
        out = {}
        for name, (dtype, dims) in input_meta.items():
            array = feed[name]
            if not isinstance(array, np.ndarray):
                raise InputError(f"{where}: input {name!r} is a {type(array).__name__}, expected an array")
            fixed = [d for d in dims if isinstance(d, int) and d > 0]
            if array.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s
                                              for d, s in zip(dims, array.shape)):
                raise InputError(f"{where}: input {name!r} has shape {list(array.shape)}, expected {dims} "
                                 f"(rank {len(dims)}{', fixed dims ' + str(fixed) if fixed else ''}) as {onnx_path} "
                                 "declares it")
            if np.dtype(dtype).kind != array.dtype.kind:
                raise InputError(f"{where}: input {name!r} is {array.dtype}, {onnx_path} takes {np.dtype(dtype)}")
            out[name] = np.ascontiguousarray(array.astype(dtype, copy=False))
        checked.append(out)
    return checked


def golden_record(model: onnx.ModelProto, onnx_path, *, dtype: str, seed: int | None,
                  feeds: list[dict[str, np.ndarray]], reference: str | None) -> dict:
    """What a saved run records beside its RunResults: the reference runner, the model and fingerprint
    the checked file records, the file, its dtype, the seed and the inputs' sha256."""
    return {"format": GOLDEN_FORMAT, "reference": reference, "model": model_record(model),
            "onnx": str(onnx_path), "dtype": dtype, "seed": seed, "inputs_sha256": inputs_sha256(feeds)}


def save_outputs(results: RunResults, path: str | Path, record: dict | None) -> None:
    """`results` as `polygraphy run --save-outputs` writes them, with attnx's `record` beside, atomically."""
    data = json.loads(results.to_json())
    if record is not None:
        data[GOLDEN_KEY] = record
    write_text(path, json.dumps(data, indent=4) + "\n")


@dataclasses.dataclass
class Golden:
    """A loaded RunResults file: its runners' results and attnx's record (None: not saved by attnx)."""

    path: Path
    results: RunResults
    record: dict | None

    def runners(self) -> list[str]:
        return list(self.results.keys())


def load_outputs(path: str | Path) -> Golden:
    """A RunResults JSON file (`polygraphy run --save-outputs`, or `attnx check --save-outputs`)."""
    text, results = _read_polygraphy_json(path, "--load-outputs", RunResults.from_json)
    if not list(results.keys()):
        raise InputError(f"--load-outputs {path}: expected the results of at least one runner, found none")
    record = json.loads(text).get(GOLDEN_KEY)
    if record is not None and (not isinstance(record, dict) or record.get("format") != GOLDEN_FORMAT):
        raise InputError(f"--load-outputs {path}: expected attnx's record (format {GOLDEN_FORMAT}) under "
                         f"{GOLDEN_KEY!r}, found {str(record)[:120]}")
    return Golden(Path(path), results, record)


def reference_of(golden: Golden, runner: str | None) -> tuple[str, list]:
    """(runner name, its IterationResults): `runner` when given, else the eager float64 model's results
    when the file has them, else the file's only runner."""
    names = golden.runners()
    if runner is not None:
        if runner not in names:
            raise InputError(f"--reference-runner {runner!r}: expected one of the runners in {golden.path} "
                             f"({', '.join(names)})")
        return runner, list(golden.results[runner])
    if EAGER_RUNNER in names:
        return EAGER_RUNNER, list(golden.results[EAGER_RUNNER])
    if len(names) == 1:
        return names[0], list(golden.results[names[0]])
    raise InputError(f"{golden.path} holds the results of {', '.join(names)} and none is {EAGER_RUNNER}: "
                     "choose the reference with --reference-runner NAME")


def check_golden_identity(golden: Golden, model: onnx.ModelProto, onnx_path, feeds, *, force: bool) -> list[str]:
    """Refuse golden outputs of another model or other inputs than `feeds`; the notes say what the
    records cannot verify. A recorded model name that differs is refused unless `force`; different
    architecture or weights digests always are (the outputs are another model's)."""
    record = golden.record
    if record is None:
        return [f"{golden.path} has no attnx record (saved by Polygraphy?): nothing verifies that its outputs "
                f"come from {onnx_path}'s model or from these inputs"]
    digest = inputs_sha256(feeds)
    if record.get("inputs_sha256") not in (None, digest):
        raise InputError(f"{golden.path} holds outputs for other inputs than --load-inputs gives (inputs sha256 "
                         f"{record['inputs_sha256'][:12]}… recorded, {digest[:12]}… loaded): load the inputs "
                         "file saved with those outputs")
    theirs, ours = record.get("model") or {}, model_record(model)
    if MODEL_KEY in theirs and MODEL_KEY in ours and theirs[MODEL_KEY] != ours[MODEL_KEY] and not force:
        raise InputError(f"{golden.path} holds outputs of model {theirs[MODEL_KEY]!r}, but {onnx_path} records "
                         f"{ours[MODEL_KEY]!r}: pass --force to compare them anyway (the fingerprints must still match)")
    for key, what in ((ARCHITECTURE_KEY, "architecture"), (WEIGHTS_KEY, "weights"), (LEGACY_WEIGHTS_KEY, "weights")):
        if key in theirs and key in ours and theirs[key] != ours[key]:
            raise InputError(f"{golden.path} holds outputs of another model than {onnx_path}: {what} sha256 "
                             f"{theirs[key][:12]}… recorded with the outputs, {ours[key][:12]}… in the file")
    notes = []
    if not any(k in theirs and k in ours for k in (WEIGHTS_KEY, LEGACY_WEIGHTS_KEY)):
        notes.append(f"{onnx_path} and {golden.path} do not both record a weights fingerprint: nothing verifies "
                     "that they come from the same model")
    return notes


def check_reference_shapes(reference: str, iterations: list, candidate: list, output_names: list[str],
                           golden: Golden, onnx_path, lengths: list) -> None:
    """The golden reference must hold, per iteration, the file's outputs at the shapes the file gives."""
    if len(iterations) != len(candidate):
        raise InputError(f"{golden.path} holds {len(iterations)} iteration(s) of {reference}, but --load-inputs gives "
                         f"{len(candidate)} feed(s): expected the inputs file saved with these outputs")
    for index, (ref, got) in enumerate(zip(iterations, candidate)):
        if set(ref.keys()) != set(output_names):
            raise InputError(f"{golden.path} iteration {index} ({reference}) has outputs {', '.join(ref.keys())}, "
                             f"expected those of {onnx_path} ({', '.join(output_names)})")
        for name in output_names:
            want, found = list(np.shape(ref[name])), list(np.shape(got[name]))
            if want != found:
                at = f" at seq {lengths[index]}" if lengths[index] is not None else ""
                raise InputError(f"{golden.path} iteration {index}{at}: output {name!r} of {reference} is {want}, "
                                 f"{onnx_path} gives {found} on the same inputs")
