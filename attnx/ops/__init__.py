"""The op registry: one folder per custom op in domain `attnx`, version 1, each with its `OpSpec`.

`attnx/ops/<op>/` holds the spec (`spec.py`), the float64 reference (`naive.py`), the ONNX
function body (`onnx_body.py`), the torch custom op (`torch_op.py`) and the binding of its CUDA
kernel's C entry points (`kernel.py`). Importing the registry registers every `torch.ops.attnx.*`.
"""

from __future__ import annotations

from onnx import defs

from attnx.errors import AttnxError
from attnx.ops import (linear_attention, mixed_chunk_attention, performer_features, relu_squared_attention,
                       sparse_attention)
from attnx.ops.entry_point import EntryPoint
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

DOMAIN = "attnx"
VERSION = 1

_OPS = (linear_attention, performer_features, mixed_chunk_attention, sparse_attention, relu_squared_attention)

REGISTRY: dict[str, OpSpec] = {op.SPEC.name: op.SPEC for op in _OPS}

# The torch.ops overload of each op, for the exporter's translation table.
TORCH_OPS = {op.SPEC.name: op.torch_op.OP for op in _OPS}

# The C entry points of each op's CUDA kernels, the forward call first.
ENTRY_POINTS: dict[str, tuple[EntryPoint, ...]] = {op.SPEC.name: op.kernel.ENTRY_POINTS for op in _OPS}


def get_spec(name: str) -> OpSpec:
    """The spec of op `name`; an unknown name lists the ops that exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise AttnxError(f"no attnx op named '{name}'; registered ops: {', '.join(sorted(REGISTRY))}") from None


def register_onnx_schemas() -> None:
    """Make every attnx op known to onnx's schema registry (idempotent).

    onnx.reference builds its op classes from the registry once, on first import, and refuses two
    schemas of one name in different domains (attnx's LinearAttention beside its own): it is
    imported before attnx's schemas are registered, so that a later import (torch's dynamo
    exporter imports it) does not fail."""
    import onnx.reference  # noqa: F401

    for spec in REGISTRY.values():
        try:
            defs.get_schema(spec.name, spec.version, spec.domain)
        except defs.SchemaError:
            defs.register_schema(spec.onnx_schema())


__all__ = ["Attr", "DOMAIN", "ENTRY_POINTS", "EntryPoint", "OpSpec", "PluginSpec", "REGISTRY", "TORCH_OPS",
           "TensorArg", "VERSION", "get_spec", "register_onnx_schemas"]
