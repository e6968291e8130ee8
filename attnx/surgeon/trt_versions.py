"""Which standard ops each TensorRT version's ONNX parser takes, and so what the `trt` and `ort-trt`
forms lower: the one table of it (read by retarget, `attnx optimize --help` and docs/surgeon.md's test).
Imports nothing heavy: the CLI reads it for its help.

Sources (read 2026-12): the onnx-tensorrt 10.14 GA parser update "added support for the Attention
operator"; TensorRT 10.15.1 added IRotaryEmbeddingLayer, through which the parser imports ONNX
RotaryEmbedding (TensorRT's "Working with Transformers" guide); TensorRT 10.16's importer still refuses
an Attention node with more than one output (NVIDIA/TensorRT#4738: "TensorRT only supports Attention
nodes with one output"), so an Attention with present key/value outputs is lowered at every version.
"""

from __future__ import annotations

import re

from attnx.errors import InputError

# The plugins are IPluginV3 (TensorRT 10.0 and later); 10.3 is what JetPack 6 ships on Jetson Orin, the
# oldest TensorRT attnx names and supports.
OLDEST = (10, 3)
# op -> the first TensorRT version whose ONNX parser imports it
PARSER_SINCE = {"Attention": (10, 14), "RotaryEmbedding": (10, 15)}
LOWERABLE = tuple(PARSER_SINCE)
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)*$")


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def supported_text() -> str:
    return f"TensorRT {fmt(OLDEST)} or later"


def parse_version(text: str) -> tuple[int, int]:
    """'10.3' (or '10.3.0.30') -> (10, 3); InputError (a ValueError) saying what is supported otherwise."""
    m = _VERSION.match(text.strip())
    if not m:
        raise InputError(f"expected a TensorRT version X.Y such as {fmt(OLDEST)}, found {text!r}")
    version = (int(m.group(1)), int(m.group(2)))
    if version < OLDEST:
        raise InputError(f"TensorRT {fmt(version)} is not supported: attnx supports {supported_text()} "
                         f"(its plugins are IPluginV3)")
    return version


def installed_version() -> str | None:
    """tensorrt.__version__ when the module imports, else None."""
    try:
        import tensorrt
    except Exception:  # absent, or present without its libraries
        return None
    return getattr(tensorrt, "__version__", None)


def default_version() -> tuple[tuple[int, int], str]:
    """(the version --trt-version defaults to, why): the installed TensorRT's, else the oldest supported."""
    found = installed_version()
    if found is None:
        return OLDEST, f"no tensorrt module installed: the oldest supported, {fmt(OLDEST)} (JetPack 6)"
    try:
        return parse_version(found), f"the installed tensorrt {found}"
    except InputError as exc:
        raise InputError(f"the installed tensorrt {found}: {exc}; pass --trt-version to write a file for "
                         "another TensorRT") from None


def parser_takes(op: str, version: tuple[int, int] | None, outputs: int = 1) -> bool:
    """Whether TensorRT `version`'s ONNX parser imports `op` (None: ONNX Runtime's TensorRT provider, which
    places opset-23 Attention/RotaryEmbedding on other providers: lower them always)."""
    if version is None or op not in PARSER_SINCE:
        return version is not None
    return version >= PARSER_SINCE[op] and (op != "Attention" or outputs == 1)


def _versions() -> list[tuple[tuple[int, int], tuple[int, int] | None]]:
    """[low, high) version ranges over which what the parser takes stays the same."""
    cuts = sorted({OLDEST, *PARSER_SINCE.values()})
    return [(low, cuts[i + 1] if i + 1 < len(cuts) else None) for i, low in enumerate(cuts)]


def _range_text(low, high) -> str:
    if high is None:
        return f"≥ {fmt(low)}"
    last = (high[0], high[1] - 1)
    return fmt(low) if last == low else f"{fmt(low)}–{fmt(last)}"


def _becomes(op: str, version) -> str:
    if not parser_takes(op, version):
        return "lowered to primitives"
    return "kept (one output; else lowered)" if op == "Attention" else "kept"


FORMS_HEADER = ("target", "TensorRT", "attnx ops", "Attention", "RotaryEmbedding")


def forms_table() -> list[tuple[str, ...]]:
    """The rows of docs/surgeon.md's forms table."""
    rows = [("ort", "—", "attnx nodes + local functions", "kept", "kept"),
            ("portable", "—", "inlined: standard ops", "kept", "kept")]
    for low, high in _versions():
        rows.append(("trt", _range_text(low, high), "plugin nodes (trt.plugins)",
                     *(_becomes(op, low) for op in LOWERABLE)))
    rows.append(("ort-trt", "the provider's", "plugin nodes (trt.plugins)",
                 *(_becomes(op, None) for op in LOWERABLE)))
    return rows
