"""Parity runs through Polygraphy: runners, data, tolerances, report."""

from attnx.check.parity import DEFAULT_SEQ_LENS, check_parity, load_onnx
from attnx.check.report import OutputResult, ParityReport
from attnx.check.tolerances import TOLERANCES

__all__ = ["DEFAULT_SEQ_LENS", "OutputResult", "ParityReport", "TOLERANCES", "check_parity", "load_onnx"]
