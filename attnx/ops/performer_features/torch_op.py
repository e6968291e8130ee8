"""`torch.ops.attnx.performer_features`: the custom op (schema from the spec), its input checks and its
eager path, the reference's formula in float32 (float64 when given float64).
"""

from __future__ import annotations

import torch

from attnx.errors import InputError
from attnx.ops.performer_features.naive import stabiliser
from attnx.ops.performer_features.spec import SPEC
from attnx.ops.torch_common import FLOAT_DTYPES, accumulation_dtype

torch.library.define("attnx::performer_features", SPEC.torch_schema())


def check_performer_inputs(x, w) -> None:
    op = SPEC.name
    if x.dim() != 4:
        raise InputError(f"{op}: x must be rank 4 [B, H, N, D], got shape {tuple(x.shape)}")
    if w.dim() != 2 or w.shape[1] != x.shape[3]:
        raise InputError(f"{op}: w must be [M, D] with D = {x.shape[3]} (x's last dim), got shape {tuple(w.shape)}")
    if x.dtype not in FLOAT_DTYPES or w.dtype != x.dtype:
        raise InputError(f"{op}: x and w must share a float dtype, got {x.dtype} and {w.dtype}")


def favor_features(x, w, *, kind, eps, offset):
    """The eager path: the reference's formula in float32 (float64 when given float64)."""
    acc = accumulation_dtype(x)
    x, w = x.to(acc) * x.shape[-1] ** -0.25, w.to(acc)
    wx = x @ w.T
    c = stabiliser(wx, kind=kind, offset=offset)
    return (wx - (x * x).sum(-1, keepdim=True) / 2 - c).exp() / w.shape[0] ** 0.5 + eps


@torch.library.impl("attnx::performer_features", "CompositeExplicitAutograd")
def _performer_features(x, w, **attrs):
    attrs = SPEC.resolve(attrs)
    check_performer_inputs(x, w)
    return favor_features(x, w, **attrs).to(x.dtype)


@torch.library.register_fake("attnx::performer_features")
def _performer_features_fake(x, w, **attrs):
    SPEC.resolve(attrs)
    check_performer_inputs(x, w)
    return x.new_empty(*x.shape[:3], w.shape[0])


OP = torch.ops.attnx.performer_features.default
