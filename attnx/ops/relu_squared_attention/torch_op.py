"""`torch.ops.attnx.relu_squared_attention`: the custom op (schema from the spec), its input checks
and its eager path, the definition in float32 (float64 when given float64) with a dense [N, M].
"""

from __future__ import annotations

import torch

from attnx.errors import InputError
from attnx.ops.relu_squared_attention.naive import row_lengths
from attnx.ops.relu_squared_attention.spec import SPEC
from attnx.ops.torch_common import accumulation_dtype, check_qkv

torch.library.define("attnx::relu_squared_attention", SPEC.torch_schema())


def relu_squared_attn(q, k, v, bias=None, *, causal, scale, norm, fixed_length, norm_placement):
    """The eager path: the definition in float32 (float64 when given float64), dense [N, M]."""
    acc = accumulation_dtype(q)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    scores = (scale or q.shape[-1] ** -0.5) * (q @ k.transpose(-1, -2))
    if bias is not None:
        scores = scores + bias.to(acc)
    lengths = row_lengths(q.shape[2], k.shape[2], causal=causal, norm=norm, fixed_length=fixed_length,
                          dtype=acc).to(q.device)
    a = torch.relu(scores / lengths).square() if norm_placement == "inside" else torch.relu(scores).square() / lengths
    return (a.tril() if causal else a) @ v


def check_relu_squared_inputs(q, k, v, bias, attrs) -> None:
    """Raise `InputError` naming the tensor, what was expected and what was found."""
    op = SPEC.name
    check_qkv(op, q, k, v, same_length=attrs["causal"])
    if bias is None:
        return
    full = (*q.shape[:3], k.shape[2])
    if bias.dim() != 4 or any(b not in (1, f) for b, f in zip(bias.shape, full)):
        raise InputError(f"{op}: bias must be rank 4 [B|1, H|1, N|1, M|1] with each axis 1 or as in "
                         f"[B, H, N, M] = {list(full)}, got shape {tuple(bias.shape)}")
    if bias.dtype != q.dtype:
        raise InputError(f"{op}: bias must have q's dtype {q.dtype}, got {bias.dtype}")


@torch.library.impl("attnx::relu_squared_attention", "CompositeExplicitAutograd")
def _relu_squared_attention(q, k, v, bias=None, **attrs):
    attrs = SPEC.resolve(attrs)
    check_relu_squared_inputs(q, k, v, bias, attrs)
    return relu_squared_attn(q, k, v, bias, **attrs).to(q.dtype)


@torch.library.register_fake("attnx::relu_squared_attention")
def _relu_squared_attention_fake(q, k, v, bias=None, **attrs):
    attrs = SPEC.resolve(attrs)
    check_relu_squared_inputs(q, k, v, bias, attrs)
    return q.new_empty(*q.shape[:3], v.shape[-1])


OP = torch.ops.attnx.relu_squared_attention.default
