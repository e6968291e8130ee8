"""Which model a file is checked against, and whether it is the model the file was exported from.

The model is `--model` from the command line, else the zoo name the file records (`attnx.model`).
A file never makes attnx run Python: a recorded `path/file.py:factory` is imported only when it
is given on the command line. A `--model` other than the recorded one is refused unless forced,
and the fingerprint the file records (attnx/models/fingerprint.py) must match the model's: a
different model is a bad input, never a parity failure.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx

from attnx.errors import InputError
from attnx.models.fingerprint import (ARCHITECTURE_KEY, LEGACY_WEIGHTS_KEY, WEIGHTS_KEY, architecture_sha256,
                                      legacy_weights_sha256, weights_sha256)
from attnx.models.zoo import ZOO, LoadedModel

MODEL_KEY = "attnx.model"
FROM_COMMAND_LINE = "given on the command line"
FROM_FILE = f"recorded in the file's {MODEL_KEY}"


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def model_record(model: onnx.ModelProto) -> dict[str, str]:
    """What the file records of its model: the name and the fingerprint digests it has."""
    meta = metadata(model)
    return {key: meta[key] for key in (MODEL_KEY, ARCHITECTURE_KEY, WEIGHTS_KEY, LEGACY_WEIGHTS_KEY) if key in meta}


def recorded_model(model: onnx.ModelProto) -> str | None:
    """The model reference the file was exported from, if it records one."""
    return metadata(model).get(MODEL_KEY)


def is_factory(ref: str) -> bool:
    path, sep, _ = ref.rpartition(":")
    return bool(sep) and path.endswith(".py")


def same_reference(a: str, b: str) -> bool:
    """Equal names, or factory references to one function in one file (paths resolved here)."""
    if a == b:
        return True
    if not (is_factory(a) and is_factory(b)):
        return False
    (path_a, _, fn_a), (path_b, _, fn_b) = a.rpartition(":"), b.rpartition(":")
    return fn_a == fn_b and Path(path_a).resolve() == Path(path_b).resolve()


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """The model reference to load, where it came from, and what the file records."""

    ref: str
    source: str
    recorded: str | None

    def describe(self) -> str:
        text = f"checking against model {self.ref} ({self.source})"
        if self.recorded is not None and not same_reference(self.recorded, self.ref):
            text += f"; the file records {self.recorded} (--force)"
        return text


def choose_model(path, recorded: str | None, given: str | None, *, force: bool = False) -> ModelChoice:
    """The model to check the file at `path` against: `given` (--model), else the recorded zoo name.

    A recorded factory is never chosen from the file; a `given` that differs from the record is
    refused unless `force`."""
    if given is not None:
        if recorded is not None and not force and not same_reference(recorded, given):
            raise InputError(f"{path} records model {recorded!r}, but --model is {given!r}: check it against "
                             f"{recorded!r}, or pass --force to check against {given!r} anyway (its "
                             "fingerprint must still match the file's)")
        return ModelChoice(given, FROM_COMMAND_LINE, recorded)
    if recorded is None:
        raise InputError(f"{path} does not say which model it came from (no {MODEL_KEY} metadata): pass --model")
    if is_factory(recorded):
        raise InputError(f"{path} records a Python factory as its model ({recorded!r}); attnx runs Python only "
                         f"when it is given on the command line: pass --model {recorded} to import and run it")
    if recorded not in ZOO:
        raise InputError(f"{path} records model {recorded!r}, which is not a zoo name (expected one of "
                         f"{', '.join(ZOO)}): pass --model")
    return ModelChoice(recorded, FROM_FILE, recorded)


def fingerprint_note(model: onnx.ModelProto, path) -> str | None:
    """What `check_same_model` cannot verify for this file, in words; None when it verifies it all."""
    meta = metadata(model)
    if ARCHITECTURE_KEY in meta and WEIGHTS_KEY in meta:
        return None
    if LEGACY_WEIGHTS_KEY in meta:
        return (f"{path} was exported before attnx recorded the architecture: its weights are verified by "
                "the old values-and-shapes digest, its architecture is not; export it again to have both checked")
    return f"{path} records no model fingerprint: nothing verifies that it comes from this model"


def check_same_model(model: onnx.ModelProto, loaded: LoadedModel, path) -> None:
    """Refuse to compare a file with a model other than the one it was exported from: a different
    architecture, or other weights, than the digests the file records."""
    meta = metadata(model)
    module = loaded.identity_module()
    recorded = meta.get(MODEL_KEY, "not recorded")
    if ARCHITECTURE_KEY in meta:
        now = architecture_sha256(module)
        if meta[ARCHITECTURE_KEY] != now:
            raise InputError(f"{path} was exported from a different model than {loaded.name} (the file records "
                             f"{recorded}): architecture sha256 {meta[ARCHITECTURE_KEY][:12]}… in the file, "
                             f"{now[:12]}… in the model (module classes and settings, parameter and buffer "
                             "names, shapes and dtypes)")
    if WEIGHTS_KEY in meta:
        key, now = WEIGHTS_KEY, weights_sha256(module)
    elif LEGACY_WEIGHTS_KEY in meta:
        key, now = LEGACY_WEIGHTS_KEY, legacy_weights_sha256(module)
    else:
        return
    if meta[key] != now:
        raise InputError(f"{path} was exported from other weights than {loaded.name} has now (weights sha256 "
                         f"{meta[key][:12]}… in the file, {now[:12]}… in the model): a factory must build the "
                         "same weights every call (seed it), or the file is from another model")
