"""The C entry points of the CUDA kernels (trt_plugins/<Op>/<op>Kernel.h) as ctypes sees them.

Each op's `kernel.py` declares its entry points here once; tools/gpu_check.py and the tests bind
them instead of writing argtypes by hand. An entry point takes an op's attributes in the spec's
order: bool as int32 0/1, a string choice as int32, its index in the spec's `choices` (the C
enums are generated in that order), int as int32, float as float. Pure ctypes: importing this
needs no GPU and no TensorRT.
"""

from __future__ import annotations

import ctypes
import dataclasses
from typing import Any, Mapping

from attnx.ops.spec import Attr, OpSpec

_C_ATTR_TYPE = {bool: ctypes.c_int32, int: ctypes.c_int32, str: ctypes.c_int32, float: ctypes.c_float}


@dataclasses.dataclass(frozen=True)
class EntryPoint:
    """One exported C function: its symbol, its parameters (name, ctypes type) in the header's
    order, and its return type."""

    symbol: str
    params: tuple[tuple[str, Any], ...]
    restype: Any = ctypes.c_int

    @property
    def argtypes(self) -> list:
        return [ctype for _, ctype in self.params]

    def bind(self, lib: ctypes.CDLL):
        """`lib`'s function with argtypes and restype set; AttributeError when `lib` does not export it."""
        fn = getattr(lib, self.symbol)
        fn.argtypes, fn.restype = self.argtypes, self.restype
        return fn


def pointers(*names: str) -> tuple[tuple[str, Any], ...]:
    """Device pointers (`const void*`, `float*`, ...): ctypes passes them all as void*."""
    return tuple((name, ctypes.c_void_p) for name in names)


def sizes(*names: str) -> tuple[tuple[str, Any], ...]:
    """Tensor sizes, int64_t."""
    return tuple((name, ctypes.c_int64) for name in names)


def attribute_params(spec: OpSpec) -> tuple[tuple[str, Any], ...]:
    """The op's attributes as an entry point takes them, in the spec's order."""
    return tuple((a.name, _C_ATTR_TYPE[a.type]) for a in spec.attributes)


def c_value(attr: Attr, value: Any):
    """`value` of `attr` as an entry point takes it: a string choice's index in `attr.choices`, a bool
    or int as int, a float as is. Converted, not validated, so a harness can pass a value outside the
    spec's limits to see the entry point refuse it."""
    if attr.type is str:
        return attr.choices.index(value)
    return int(value) if attr.type in (bool, int) else value


def attribute_values(spec: OpSpec, attrs: Mapping[str, Any]) -> list:
    """Every attribute of `attrs` (all of them, as `spec.resolve` returns them) as `attribute_params`
    declares it, by `c_value`."""
    return [c_value(a, attrs[a.name]) for a in spec.attributes]


# What every forward entry point takes last: the I/O attnx_dtype and the cudaStream_t.
DTYPE_AND_STREAM = (("dtype", ctypes.c_int32), ("stream", ctypes.c_void_p))
