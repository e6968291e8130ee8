"""One comparison rule for every check: Polygraphy's SimpleCompareFunc, its atol, rtol and error
statistic set per output as `polygraphy run --atol logits:1e-3 --check-error-stat max` sets them.

The rule (Polygraphy's): with the elementwise statistic an element fails when it is off by more than
atol AND by more than rtol of the reference, that is when |got − ref| > max(atol, rtol·|ref|); with
max, mean or median the statistic of |got − ref| is held to atol and that of |got − ref| / |ref| to
rtol, and fails when both exceed. `deciding_error` puts either in one number: how far the error
that decided the verdict lies beyond its bound (≤ 0 passed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections import OrderedDict
from typing import Mapping

import numpy as np
from polygraphy.comparator import SimpleCompareFunc
from polygraphy.comparator.struct import IterationResult
from polygraphy.logger import G_LOGGER

from attnx.check.tolerances import Tolerance
from attnx.errors import InputError

ERROR_STATS = ("elemwise", "max", "mean", "median")  # Polygraphy's, less quantile (it needs a quantile too)
DEFAULT_STAT = "elemwise"
ALL_OUTPUTS = ""  # Polygraphy's key for the value of every output not named


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    """atol, rtol and the error statistic per output name, Polygraphy's per-output dictionaries
    ({"": default, "logits": 1e-3}); `ALL_OUTPUTS` always holds the default."""

    atol: Mapping[str, float]
    rtol: Mapping[str, float]
    stat: Mapping[str, str]

    @classmethod
    def build(cls, tol: Tolerance, *, atol: Mapping[str, float] | None = None, rtol: Mapping[str, float] | None = None,
              stat: Mapping[str, str] | None = None, outputs: list[str] | None = None) -> "CompareOptions":
        """The dtype's tolerance `tol` with the values given (`ALL_OUTPUTS` for every output, else one
        output's name) laid over it; a name not among `outputs` is an InputError naming them."""
        given = {"--atol": dict(atol or {}), "--rtol": dict(rtol or {}), "--check-error-stat": dict(stat or {})}
        if outputs is not None:
            for flag, values in given.items():
                unknown = [name for name in values if name != ALL_OUTPUTS and name not in outputs]
                if unknown:
                    raise InputError(f"{flag} names output(s) {', '.join(map(repr, unknown))}: expected outputs of "
                                     f"the file ({', '.join(outputs)})")
        bad = [s for s in given["--check-error-stat"].values() if s not in ERROR_STATS]
        if bad:
            raise InputError(f"expected an error statistic among {', '.join(ERROR_STATS)}, found {', '.join(bad)}")
        return cls({ALL_OUTPUTS: tol.atol, **given["--atol"]}, {ALL_OUTPUTS: tol.rtol, **given["--rtol"]},
                   {ALL_OUTPUTS: DEFAULT_STAT, **given["--check-error-stat"]})

    def for_output(self, name: str) -> tuple[float, float, str]:
        """(atol, rtol, statistic) of output `name`."""
        return (self.atol.get(name, self.atol[ALL_OUTPUTS]), self.rtol.get(name, self.rtol[ALL_OUTPUTS]),
                self.stat.get(name, self.stat[ALL_OUTPUTS]))

    def func(self) -> SimpleCompareFunc:
        return SimpleCompareFunc(atol=dict(self.atol), rtol=dict(self.rtol), check_error_stat=dict(self.stat))


def compare_func(tol: Tolerance | CompareOptions) -> SimpleCompareFunc:
    """Polygraphy's comparator for a dtype's tolerance (elementwise) or for per-output options."""
    options = tol if isinstance(tol, CompareOptions) else CompareOptions.build(tol)
    return options.func()


def deciding_error(got: np.ndarray, ref: np.ndarray, result, atol: float, rtol: float, stat: str) -> float:
    """How far the error that decided Polygraphy's verdict lies beyond its bound: > 0 failed, ≤ 0 passed,
    NaN where a value is not a number.

    elemwise: the largest |got − ref| − max(atol, rtol·|ref|) over the elements. max, mean, median:
    S_abs − max(atol, rtol·S_abs / S_rel) for the statistic S of the absolute and relative errors
    (S_abs / S_rel stands for |ref|), which is ≤ 0 exactly when S_abs ≤ atol or S_rel ≤ rtol."""
    if stat == "elemwise":
        ref64 = np.asarray(ref, dtype=np.float64)
        diff = np.abs(np.asarray(got, dtype=np.float64) - ref64)
        if diff.size == 0:
            return -atol
        return float(np.max(diff - np.maximum(atol, rtol * np.abs(ref64))))
    abs_err, rel_err = getattr(result, f"{stat}_absdiff"), getattr(result, f"{stat}_reldiff")
    if not (np.isfinite(abs_err) and np.isfinite(rel_err)):
        return float("nan")
    if abs_err == 0:
        return -atol
    return float(abs_err - max(atol, rtol * abs_err / rel_err if rel_err > 0 else np.inf))


def contiguous(outputs) -> OrderedDict:
    """Polygraphy views arrays and needs them contiguous (slices are not)."""
    return OrderedDict((name, np.ascontiguousarray(a)) for name, a in outputs.items())


def compare(got: dict[str, np.ndarray], reference: dict[str, np.ndarray], tol: Tolerance | CompareOptions):
    """{name: OutputCompareResult} for outputs present in both; rel errors against `reference`."""
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        return compare_func(tol)(IterationResult(contiguous(got), runner_name="candidate"),
                                 IterationResult(contiguous(reference), runner_name="reference"))


POLYGRAPHY_LEVEL = {-1: G_LOGGER.CRITICAL, 0: G_LOGGER.ERROR, 1: G_LOGGER.INFO}


@contextlib.contextmanager
def polygraphy_logs(verbosity: int = 0):
    """Polygraphy's log while inside: nothing below critical when quiet (-1), its errors (0), its details
    (1: tolerances and error metrics per output; 2: verbose), on stderr so that stdout holds the report."""
    level = POLYGRAPHY_LEVEL.get(verbosity, G_LOGGER.VERBOSE)
    with G_LOGGER.verbosity(level), contextlib.redirect_stdout(sys.stderr):
        yield
