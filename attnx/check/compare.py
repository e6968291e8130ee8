"""One comparison rule for every check: Polygraphy's elementwise atol-or-rtol test."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from polygraphy.comparator import SimpleCompareFunc
from polygraphy.comparator.struct import IterationResult
from polygraphy.logger import G_LOGGER

from attnx.check.tolerances import Tolerance


def compare_func(tol: Tolerance) -> SimpleCompareFunc:
    """An element fails when it is off by more than atol AND by more than rtol of the reference."""
    return SimpleCompareFunc(atol=tol.atol, rtol=tol.rtol, check_error_stat="elemwise")


def compare(got: dict[str, np.ndarray], reference: dict[str, np.ndarray], tol: Tolerance):
    """{name: OutputCompareResult} for outputs present in both; rel errors against `reference`."""
    def arrays(outputs):  # Polygraphy views arrays and needs them contiguous (slices are not)
        return OrderedDict((name, np.ascontiguousarray(a)) for name, a in outputs.items())

    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        return compare_func(tol)(IterationResult(arrays(got), runner_name="candidate"),
                                 IterationResult(arrays(reference), runner_name="reference"))
