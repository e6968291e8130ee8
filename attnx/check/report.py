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
    seq_len: int
    shape: list[int]
    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    passed: bool


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

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def to_json(self) -> dict:
        return {"passed": self.passed, "backend": self.backend, "inputs": self.inputs,
                "outputs": [dataclasses.asdict(o) for o in self.outputs],
                "model": self.model, "onnx": self.onnx_path, "reference": self.reference,
                "dtype": self.dtype, "seed": self.seed}

    def write_json(self, path: str | Path) -> None:
        write_text(path, strict_json(self.to_json()))

    def to_text(self) -> str:
        lines = [f"parity: {self.onnx_path} on {self.backend} vs {self.reference} ({self.model}, {self.dtype}, "
                 f"seed {self.seed})",
                 f"  {'output':<12} {'seq':>5}  {'shape':<16} {'max abs':>9} {'max rel':>9} {'atol':>7} {'rtol':>7}"]
        for o in self.outputs:
            lines.append(f"  {o.name:<12} {o.seq_len:>5}  {str(o.shape):<16} {o.max_abs_err:>9.2e} "
                         f"{o.max_rel_err:>9.2e} {o.atol:>7.0e} {o.rtol:>7.0e}  {'✓' if o.passed else '✗'}")
        verdict = "PASSED" if self.passed else "FAILED"
        failed = sum(not o.passed for o in self.outputs)
        lines.append(f"{verdict}: {len(self.outputs) - failed} of {len(self.outputs)} outputs within tolerance")
        return "\n".join(lines)
