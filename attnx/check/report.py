"""The parity report: one line per output and length for a person, JSON for a machine."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from attnx.files import write_text

NON_FINITE_FLAG = "non_finite_as_null"  # set in a report where a NaN or ±Inf was written as null


def _finite_or_none(value, found: list):
    if isinstance(value, float) and not math.isfinite(value):
        found.append(value)
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v, found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v, found) for v in value]
    return value


def strict_json(report: dict) -> str:
    """`report` as strict JSON (RFC 8259 has no NaN or Infinity): each non-finite number becomes null,
    and the top level then says so with `"non_finite_as_null": true`."""
    found: list = []
    clean = _finite_or_none(report, found)
    if found:
        clean[NON_FINITE_FLAG] = True
    return json.dumps(clean, indent=2, allow_nan=False) + "\n"


@dataclasses.dataclass
class OutputResult:
    name: str
    seq_len: int | None  # None: inputs given, not drawn at a length, and no axis named seq
    shape: list[int]
    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    passed: bool
    # the error statistic checked, and how far the error that decided the verdict lies beyond its bound
    # (attnx.check.compare.deciding_error: > 0 failed, <= 0 passed; None where not computed)
    stat: str = "elemwise"
    excess: float | None = None


@dataclasses.dataclass
class NonFinite:
    """Values that are NaN or ±Inf in one output of one run: found before any comparison, they fail
    the check at once."""

    runner: str
    output: str
    seq_len: int | None
    shape: list[int]
    nan: int
    inf: int

    def describe(self) -> str:
        at = f" at seq {self.seq_len}" if self.seq_len is not None else ""
        size = math.prod(self.shape)
        return (f"{self.runner}: output {self.output!r}{at} {self.shape} has {self.nan + self.inf} of {size} values "
                f"not finite ({self.nan} NaN, {self.inf} Inf)")


@dataclasses.dataclass
class ParityReport:
    """What was compared with what, and the verdict. `inputs` maps name → declared ONNX shape."""

    model: str
    onnx_path: str
    backend: str
    reference: str
    dtype: str
    seed: int
    inputs: dict[str, list]
    outputs: list[OutputResult]
    non_finite: list[NonFinite] = dataclasses.field(default_factory=list)
    # what ran, for --save-inputs / --save-outputs: the feeds and Polygraphy's RunResults (not in the JSON)
    feeds: list | None = dataclasses.field(default=None, repr=False, compare=False)
    run_results: object = dataclasses.field(default=None, repr=False, compare=False)
    record: dict | None = dataclasses.field(default=None, repr=False, compare=False)  # attnx.check.golden_record

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs) and not self.non_finite

    def to_json(self) -> dict:
        return {"passed": self.passed, "backend": self.backend, "inputs": self.inputs,
                "outputs": [dataclasses.asdict(o) for o in self.outputs],
                "non_finite": [dataclasses.asdict(n) for n in self.non_finite],
                "model": self.model, "onnx": self.onnx_path, "reference": self.reference,
                "dtype": self.dtype, "seed": self.seed}

    def write_json(self, path: str | Path) -> None:
        write_text(path, strict_json(self.to_json()))

    def verdict(self) -> str:
        """The last line of the report: the verdict and what decided it."""
        if self.non_finite:
            more = f" (and {len(self.non_finite) - 1} more)" if len(self.non_finite) > 1 else ""
            return f"FAILED: {self.non_finite[0].describe()}{more}; nothing was compared"
        failed = sum(not o.passed for o in self.outputs)
        return (f"{'PASSED' if self.passed else 'FAILED'}: {len(self.outputs) - failed} of {len(self.outputs)} "
                "outputs within tolerance")

    def to_text(self) -> str:
        seed = f", seed {self.seed}" if self.seed is not None else ""
        lines = [f"parity: {self.onnx_path} on {self.backend} vs {self.reference} ({self.model}, {self.dtype}{seed})"]
        if self.non_finite:
            lines += [f"  not finite: {n.describe()}" for n in self.non_finite]
            lines.append(self.verdict())
            return "\n".join(lines)
        lines.append(f"  {'output':<12} {'seq':>5}  {'shape':<16} {'max abs':>9} {'max rel':>9} {'atol':>7} "
                     f"{'rtol':>7} {'stat':>8} {'excess':>10}")
        for o in self.outputs:
            seq = "-" if o.seq_len is None else o.seq_len
            excess = "-" if o.excess is None else f"{o.excess:+.2e}"
            lines.append(f"  {o.name:<12} {seq:>5}  {str(o.shape):<16} {o.max_abs_err:>9.2e} "
                         f"{o.max_rel_err:>9.2e} {o.atol:>7.0e} {o.rtol:>7.0e} {o.stat:>8} {excess:>10}  "
                         f"{'✓' if o.passed else '✗'}")
        if any(o.excess is not None for o in self.outputs):
            lines.append("  excess: the deciding error beyond its bound, |got - ref| - max(atol, rtol*|ref|) (elemwise: "
                         "the worst element; max/mean/median: that statistic); <= 0 passes, whatever max rel says")
        lines.append(self.verdict())
        return "\n".join(lines)
