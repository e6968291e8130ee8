"""The attnx ops as torch.library custom ops, so torch.export keeps each call as one node.

The schema of each op is `OpSpec.torch_schema()`; the eager implementation is the fast
torch path (float32 accumulation, float64 when given float64), tested against the spec's
float64 reference. `torch.ops.attnx.linear_attention(q, k, v, causal=True, ...)`.
"""

from __future__ import annotations

import torch

from attnx.errors import InputError
from attnx.ops import linear_attention
from attnx.ops.linear_attention import FEATURE_MAPS

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

torch.library.define("attnx::linear_attention", linear_attention.SPEC.torch_schema())


def check_linear_attention_inputs(q, k, v, state_s, state_z, attrs) -> None:
    """Raise `InputError` naming the tensor, what was expected and what was found."""
    op = linear_attention.SPEC.name
    for name, t, layout in (("q", q, "[B, H, N, D]"), ("k", k, "[B, H, M, D]"), ("v", v, "[B, H, M, E]")):
        if t.dim() != 4:
            raise InputError(f"{op}: {name} must be rank 4 {layout}, got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise InputError(f"{op}: {name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InputError(f"{op}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, n, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:2] != (b, h) or k.shape[3] != d or v.shape[2] != k.shape[2]:
        raise InputError(f"{op}: shapes disagree: q {tuple(q.shape)} [B, H, N, D], k {tuple(k.shape)} "
                         f"[B, H, M, D], v {tuple(v.shape)} [B, H, M, E]")
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
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
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
    pad = (-n) % c
    qc, kc, vc = (torch.nn.functional.pad(x, (0, 0, 0, pad)).unflatten(2, (-1, c)) for x in (fq, fk, vf))
    scores = (qc @ kc.transpose(-1, -2)).tril()                      # [B, H, N/C, C, C]
    kv = kc.transpose(-1, -2) @ vc                                   # [B, H, N/C, D, E]
    s_prev = _exclusive_cumsum(kv) + s0.unsqueeze(2)
    y = scores @ vc + qc @ s_prev
    ksum = kc.sum(3)                                                 # [B, H, N/C, D]
    if normalize:
        z_prev = _exclusive_cumsum(ksum) + z0.unsqueeze(2)
        den = scores.sum(-1) + (qc * z_prev.unsqueeze(3)).sum(-1)
        y = y / (den + eps).unsqueeze(-1)
    y = y.flatten(2, 3)[:, :, :n]
    return y.to(q.dtype), s0 + kv.sum(2), z0 + ksum.sum(2)


def _exclusive_cumsum(x):
    """Sum over earlier chunks (dim 2) only: the current chunk is the masked product's."""
    return torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, :-1].cumsum(2)], dim=2)


@torch.library.impl("attnx::linear_attention", "CompositeExplicitAutograd")
def _linear_attention(q, k, v, state_s=None, state_z=None, **attrs):
    attrs = linear_attention.SPEC.resolve(attrs)
    check_linear_attention_inputs(q, k, v, state_s, state_z, attrs)
    return chunk_linear_attn(q, k, v, state_s, state_z, **attrs)


@torch.library.register_fake("attnx::linear_attention")
def _linear_attention_fake(q, k, v, state_s=None, state_z=None, **attrs):
    attrs = linear_attention.SPEC.resolve(attrs)
    check_linear_attention_inputs(q, k, v, state_s, state_z, attrs)
    b, h, _, d = q.shape
    e = v.shape[-1]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    return (q.new_empty(*q.shape[:3], e), q.new_empty(b, h, d, e, dtype=acc), q.new_empty(b, h, d, dtype=acc))


# torch.ops name of each registered spec, for the exporter's translation table.
TORCH_OPS = {linear_attention.SPEC.name: torch.ops.attnx.linear_attention.default}
