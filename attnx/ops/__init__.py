"""The op registry: one `OpSpec` per custom op in domain `attnx`, version 1."""

from __future__ import annotations

from onnx import defs

from attnx.errors import AttnxError
from attnx.ops import (linear_attention, mixed_chunk_attention, performer_features, relu_squared_attention,
                       sparse_attention)
from attnx.ops.spec import Attr, OpSpec, PluginSpec, TensorArg

DOMAIN = "attnx"
VERSION = 1

REGISTRY: dict[str, OpSpec] = {spec.name: spec for spec in (
    linear_attention.SPEC, performer_features.SPEC, mixed_chunk_attention.SPEC, sparse_attention.SPEC,
    relu_squared_attention.SPEC)}


def get_spec(name: str) -> OpSpec:
    """The spec of op `name`; an unknown name lists the ops that exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise AttnxError(f"no attnx op named '{name}'; registered ops: {', '.join(sorted(REGISTRY))}") from None


def register_onnx_schemas() -> None:
    """Make every attnx op known to onnx's schema registry (idempotent)."""
    for spec in REGISTRY.values():
        try:
            defs.get_schema(spec.name, spec.version, spec.domain)
        except defs.SchemaError:
            defs.register_schema(spec.onnx_schema())


__all__ = ["Attr", "DOMAIN", "OpSpec", "PluginSpec", "REGISTRY", "TensorArg", "VERSION", "get_spec",
           "register_onnx_schemas"]
