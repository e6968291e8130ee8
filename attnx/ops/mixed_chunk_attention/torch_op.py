"""`torch.ops.attnx.mixed_chunk_attention`: the custom op (schema from the spec), its input checks and
its fast eager path, the chunked algorithm of the ONNX body (chunks of g, exclusive prefix).
"""

from __future__ import annotations

import torch

from attnx.errors import InputError
from attnx.ops.mixed_chunk_attention.naive import scales
from attnx.ops.mixed_chunk_attention.spec import SPEC
from attnx.ops.torch_common import accumulation_dtype, check_qkv, exclusive_cumsum, pad_to

torch.library.define("attnx::mixed_chunk_attention", SPEC.torch_schema())


def check_mixed_chunk_inputs(quad_q, quad_k, lin_q, lin_k, v, bias=None, chunk_size=None) -> None:
    """Raise `InputError` naming the tensor, what was expected and what was found."""
    op = SPEC.name
    check_qkv(op, quad_q, quad_k, v, same_length=True)
    for name, t in (("lin_q", lin_q), ("lin_k", lin_k)):
        if tuple(t.shape) != tuple(quad_q.shape) or t.dtype != quad_q.dtype:
            raise InputError(f"{op}: {name} must match quad_q {tuple(quad_q.shape)} {quad_q.dtype} "
                             f"[B, H, N, S], got {tuple(t.shape)} {t.dtype}")
    if bias is None:
        return
    full = (*quad_q.shape[:2], chunk_size, chunk_size)
    if bias.dim() != 4 or any(b not in (1, f) for b, f in zip(bias.shape, full)):
        raise InputError(f"{op}: bias must be rank 4 [B|1, H|1, g|1, g|1] with each axis 1 or as in "
                         f"[B, H, g, g] = {list(full)} (g = chunk_size), got shape {tuple(bias.shape)}")
    if bias.dtype != quad_q.dtype:
        raise InputError(f"{op}: bias must have quad_q's dtype {quad_q.dtype}, got {bias.dtype}")


def chunk_mixed_attn(quad_q, quad_k, lin_q, lin_k, v, bias=None, *, causal, chunk_size, quad_scale, lin_scale):
    """The fast eager path, same algorithm as the ONNX body (chunks of g, exclusive prefix)."""
    acc = accumulation_dtype(quad_q)
    n, g = quad_q.shape[2], chunk_size
    s_q, s_l = scales(n, causal=causal, chunk_size=g, quad_scale=quad_scale, lin_scale=lin_scale)
    qq, qk, lq, lk, vc = (pad_to(x.to(acc), g).unflatten(2, (-1, g)) for x in (quad_q, quad_k, lin_q, lin_k, v))
    scores = s_q * qq @ qk.transpose(-1, -2)                                   # [B, H, N/g, g, g]
    if bias is not None:  # the same in every chunk; padded keys are zero in v
        scores = scores + bias.to(acc).unsqueeze(2)
    quad = torch.relu(scores).square()
    if causal:
        quad = quad.tril()
    kv = lk.transpose(-1, -2) @ vc                                             # [B, H, N/g, S, E]
    state = exclusive_cumsum(kv) if causal else kv.sum(2, keepdim=True)
    y = quad @ vc + s_l * (lq @ state)
    return y.flatten(2, 3)[:, :, :n]


@torch.library.impl("attnx::mixed_chunk_attention", "CompositeExplicitAutograd")
def _mixed_chunk_attention(quad_q, quad_k, lin_q, lin_k, v, bias=None, **attrs):
    attrs = SPEC.resolve(attrs)
    check_mixed_chunk_inputs(quad_q, quad_k, lin_q, lin_k, v, bias, attrs["chunk_size"])
    return chunk_mixed_attn(quad_q, quad_k, lin_q, lin_k, v, bias, **attrs).to(quad_q.dtype)


@torch.library.register_fake("attnx::mixed_chunk_attention")
def _mixed_chunk_attention_fake(quad_q, quad_k, lin_q, lin_k, v, bias=None, **attrs):
    attrs = SPEC.resolve(attrs)
    check_mixed_chunk_inputs(quad_q, quad_k, lin_q, lin_k, v, bias, attrs["chunk_size"])
    return quad_q.new_empty(*quad_q.shape[:3], v.shape[-1])


OP = torch.ops.attnx.mixed_chunk_attention.default
