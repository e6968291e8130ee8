"""`torch.ops.attnx.linear_attention`: the custom op (schema from the spec), its input checks and
its fast eager path, the chunked algorithm of the ONNX body (float32 accumulation, float64 when
given float64). `torch.ops.attnx.linear_attention(q, k, v, causal=True, ...)` → (y, S, z).
"""

from __future__ import annotations

import torch

from attnx.errors import InputError
from attnx.ops.linear_attention.naive import FEATURE_MAPS
from attnx.ops.linear_attention.spec import SPEC
from attnx.ops.torch_common import accumulation_dtype, check_qkv, exclusive_cumsum, pad_to

torch.library.define("attnx::linear_attention", SPEC.torch_schema())


def check_linear_attention_inputs(q, k, v, state_s, state_z, attrs) -> None:
    """Raise `InputError` naming the tensor, what was expected and what was found."""
    op = SPEC.name
    check_qkv(op, q, k, v, same_length=False)
    b, h, n, d = q.shape
    if attrs["causal"] and k.shape[2] != n:
        raise InputError(f"{op}: causal needs as many keys as queries, got N={n}, M={k.shape[2]}")
    if (state_s is None) != (state_z is None):
        raise InputError(f"{op}: state_s and state_z come together or not at all")
    if state_s is not None:
        e = v.shape[3]
        if tuple(state_s.shape) != (b, h, d, e) or tuple(state_z.shape) != (b, h, d):
            raise InputError(f"{op}: state shapes must be state_s [B, H, D, E] = {(b, h, d, e)} and "
                             f"state_z [B, H, D] = {(b, h, d)}, got {tuple(state_s.shape)} and "
                             f"{tuple(state_z.shape)}")


def chunk_linear_attn(q, k, v, state_s=None, state_z=None, *, causal, feature_map, normalize, eps, chunk_size):
    """The fast eager path, same algorithm as the ONNX body. Returns (y, S, z)."""
    acc = accumulation_dtype(q)
    phi = FEATURE_MAPS[feature_map]
    fq, fk, vf = phi(q.to(acc)), phi(k.to(acc)), v.to(acc)
    b, h, n, d = fq.shape
    e = vf.shape[-1]
    s0 = state_s.to(acc) if state_s is not None else fq.new_zeros(b, h, d, e)
    z0 = state_z.to(acc) if state_z is not None else fq.new_zeros(b, h, d)
    if not causal:
        s = s0 + fk.transpose(-1, -2) @ vf
        z = z0 + fk.sum(2)
        y = fq @ s
        if normalize:
            y = y / ((fq * z.unsqueeze(2)).sum(-1, keepdim=True) + eps)
        return y.to(q.dtype), s, z
    c = chunk_size
    qc, kc, vc = (pad_to(x, c).unflatten(2, (-1, c)) for x in (fq, fk, vf))
    scores = (qc @ kc.transpose(-1, -2)).tril()                      # [B, H, N/C, C, C]
    kv = kc.transpose(-1, -2) @ vc                                   # [B, H, N/C, D, E]
    s_prev = exclusive_cumsum(kv) + s0.unsqueeze(2)
    y = scores @ vc + qc @ s_prev
    ksum = kc.sum(3)                                                 # [B, H, N/C, D]
    if normalize:
        z_prev = exclusive_cumsum(ksum) + z0.unsqueeze(2)
        den = scores.sum(-1) + (qc * z_prev.unsqueeze(3)).sum(-1)
        y = y / (den + eps).unsqueeze(-1)
    y = y.flatten(2, 3)[:, :, :n]
    return y.to(q.dtype), s0 + kv.sum(2), z0 + ksum.sum(2)


@torch.library.impl("attnx::linear_attention", "CompositeExplicitAutograd")
def _linear_attention(q, k, v, state_s=None, state_z=None, **attrs):
    attrs = SPEC.resolve(attrs)
    check_linear_attention_inputs(q, k, v, state_s, state_z, attrs)
    return chunk_linear_attn(q, k, v, state_s, state_z, **attrs)


@torch.library.register_fake("attnx::linear_attention")
def _linear_attention_fake(q, k, v, state_s=None, state_z=None, **attrs):
    attrs = SPEC.resolve(attrs)
    check_linear_attention_inputs(q, k, v, state_s, state_z, attrs)
    b, h, _, d = q.shape
    e = v.shape[-1]
    acc = accumulation_dtype(q)
    return (q.new_empty(*q.shape[:3], e), q.new_empty(b, h, d, e, dtype=acc), q.new_empty(b, h, d, dtype=acc))


OP = torch.ops.attnx.linear_attention.default
