"""The attnx ops as torch.library custom ops, so torch.export keeps each call as one node.

The schema of each op is `OpSpec.torch_schema()`; the eager implementation is the fast
torch path (float32 accumulation, float64 when given float64), tested against the spec's
float64 reference. `torch.ops.attnx.linear_attention(q, k, v, causal=True, ...)`.
"""

from __future__ import annotations

import torch

from attnx.errors import InputError
from attnx.ops import (linear_attention, mixed_chunk_attention, performer_features, relu_squared_attention,
                       sparse_attention)
from attnx.ops.linear_attention import FEATURE_MAPS

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

torch.library.define("attnx::linear_attention", linear_attention.SPEC.torch_schema())


def _check_qkv(op: str, q, k, v, *, same_length: bool) -> None:
    """q [B, H, N, D], k [B, H, M, D], v [B, H, M, E], one float dtype; M = N when `same_length`."""
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
    if same_length and k.shape[2] != n:
        raise InputError(f"{op}: keys must have the queries' length, got N={n}, M={k.shape[2]}")


def check_linear_attention_inputs(q, k, v, state_s, state_z, attrs) -> None:
    """Raise `InputError` naming the tensor, what was expected and what was found."""
    op = linear_attention.SPEC.name
    _check_qkv(op, q, k, v, same_length=False)
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


# SparseAttention ------------------------------------------------------------------------------

torch.library.define("attnx::sparse_attention", sparse_attention.SPEC.torch_schema())


def _acc(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _pad_to(x, multiple: int):
    """Zero-pad dim 2 of [B, H, N, D] up to a multiple of `multiple`."""
    return torch.nn.functional.pad(x, (0, 0, 0, (-x.shape[2]) % multiple))


def window_sparse_attn(q, k, v, *, pattern, window, dilation, stride, block, causal, scale):
    """The fast eager path, same algorithm as the ONNX body: only allowed keys are touched."""
    acc = _acc(q)
    attrs = dict(pattern=pattern, window=window, dilation=dilation, stride=stride, block=block, causal=causal)
    q, k, v = q.to(acc) * (scale or q.shape[-1] ** -0.5), k.to(acc), v.to(acc)
    n = q.shape[2]
    if pattern == "block":
        qt, kt, vt = (_pad_to(x, block).unflatten(2, (-1, block)) for x in (q, k, v))
        pos = torch.arange(qt.shape[2] * block, device=q.device).view(-1, 1, block)
        keep = pos < n                                                         # [N/b, 1, b]
        if causal:
            keep = keep & torch.ones(block, block, dtype=torch.bool, device=q.device).tril()
        scores = (qt @ kt.transpose(-1, -2)).masked_fill(~keep, float("-inf"))
        return (torch.softmax(scores, -1) @ vt).flatten(2, 3)[:, :, :n]
    offsets = torch.tensor(sparse_attention.window_offsets(attrs), device=q.device)
    span = int(offsets.abs().max())
    j = torch.arange(n, device=q.device)[:, None] - offsets                   # [N, L]
    keep = (j >= 0) & (j < n)
    kw, vw = (torch.nn.functional.pad(x, (0, 0, span, span))[:, :, j + span] for x in (k, v))  # [B, H, N, L, ·]
    local = torch.einsum("bhnd,bhnld->bhnl", q, kw).masked_fill(~keep, float("-inf"))
    if pattern != "strided":
        return torch.einsum("bhnl,bhnle->bhne", torch.softmax(local, -1), vw)
    qr, kr, vr = (_pad_to(x, stride).unflatten(2, (-1, stride)).transpose(2, 3) for x in (q, k, v))  # [B, H, t, A, ·]
    pos = (torch.arange(qr.shape[3], device=q.device) * stride + torch.arange(stride, device=q.device)[:, None])
    dd = pos[:, :, None] - pos[:, None, :]                                     # [t, A, A]
    in_window = ((dd >= 0) & (dd < window)) if causal else dd.abs() <= window
    keep_far = (pos[:, None, :] < n) & ~in_window
    if causal:
        keep_far = keep_far & (dd >= 0)
    far = (qr @ kr.transpose(-1, -2)).masked_fill(~keep_far, float("-inf"))
    far = far.transpose(2, 3).flatten(2, 3)[:, :, :n]                          # [B, H, N, A]
    probs = torch.softmax(torch.cat([local, far], -1), -1)
    p_local, p_far = probs.split([local.shape[-1], far.shape[-1]], -1)
    p_far = _pad_to(p_far, stride).unflatten(2, (-1, stride)).transpose(2, 3)  # [B, H, t, A, A]
    y_far = (p_far @ vr).transpose(2, 3).flatten(2, 3)[:, :, :n]
    return torch.einsum("bhnl,bhnle->bhne", p_local, vw) + y_far


@torch.library.impl("attnx::sparse_attention", "CompositeExplicitAutograd")
def _sparse_attention(q, k, v, **attrs):
    attrs = sparse_attention.SPEC.resolve(attrs)
    _check_qkv(sparse_attention.SPEC.name, q, k, v, same_length=True)
    return window_sparse_attn(q, k, v, **attrs).to(q.dtype)


@torch.library.register_fake("attnx::sparse_attention")
def _sparse_attention_fake(q, k, v, **attrs):
    sparse_attention.SPEC.resolve(attrs)
    _check_qkv(sparse_attention.SPEC.name, q, k, v, same_length=True)
    return q.new_empty(*q.shape[:3], v.shape[-1])


# PerformerFeatures ----------------------------------------------------------------------------

torch.library.define("attnx::performer_features", performer_features.SPEC.torch_schema())


def check_performer_inputs(x, w) -> None:
    op = performer_features.SPEC.name
    if x.dim() != 4:
        raise InputError(f"{op}: x must be rank 4 [B, H, N, D], got shape {tuple(x.shape)}")
    if w.dim() != 2 or w.shape[1] != x.shape[3]:
        raise InputError(f"{op}: w must be [M, D] with D = {x.shape[3]} (x's last dim), got shape {tuple(w.shape)}")
    if x.dtype not in _FLOAT_DTYPES or w.dtype != x.dtype:
        raise InputError(f"{op}: x and w must share a float dtype, got {x.dtype} and {w.dtype}")


def favor_features(x, w, *, kind, eps, offset):
    """The eager path: the reference's formula in float32 (float64 when given float64)."""
    acc = _acc(x)
    x, w = x.to(acc) * x.shape[-1] ** -0.25, w.to(acc)
    wx = x @ w.T
    c = performer_features.stabiliser(wx, kind=kind, offset=offset)
    return (wx - (x * x).sum(-1, keepdim=True) / 2 - c).exp() / w.shape[0] ** 0.5 + eps


@torch.library.impl("attnx::performer_features", "CompositeExplicitAutograd")
def _performer_features(x, w, **attrs):
    attrs = performer_features.SPEC.resolve(attrs)
    check_performer_inputs(x, w)
    return favor_features(x, w, **attrs).to(x.dtype)


@torch.library.register_fake("attnx::performer_features")
def _performer_features_fake(x, w, **attrs):
    performer_features.SPEC.resolve(attrs)
    check_performer_inputs(x, w)
    return x.new_empty(*x.shape[:3], w.shape[0])


# MixedChunkAttention --------------------------------------------------------------------------

torch.library.define("attnx::mixed_chunk_attention", mixed_chunk_attention.SPEC.torch_schema())


def check_mixed_chunk_inputs(quad_q, quad_k, lin_q, lin_k, v) -> None:
    op = mixed_chunk_attention.SPEC.name
    _check_qkv(op, quad_q, quad_k, v, same_length=True)
    for name, t in (("lin_q", lin_q), ("lin_k", lin_k)):
        if tuple(t.shape) != tuple(quad_q.shape) or t.dtype != quad_q.dtype:
            raise InputError(f"{op}: {name} must match quad_q {tuple(quad_q.shape)} {quad_q.dtype} "
                             f"[B, H, N, S], got {tuple(t.shape)} {t.dtype}")


def chunk_mixed_attn(quad_q, quad_k, lin_q, lin_k, v, *, causal, chunk_size, quad_scale, lin_scale):
    """The fast eager path, same algorithm as the ONNX body (chunks of g, exclusive prefix)."""
    acc = _acc(quad_q)
    n, g = quad_q.shape[2], chunk_size
    s_q, s_l = mixed_chunk_attention.scales(n, causal=causal, chunk_size=g, quad_scale=quad_scale,
                                            lin_scale=lin_scale)
    qq, qk, lq, lk, vc = (_pad_to(x.to(acc), g).unflatten(2, (-1, g)) for x in (quad_q, quad_k, lin_q, lin_k, v))
    quad = torch.relu(s_q * qq @ qk.transpose(-1, -2)).square()                # [B, H, N/g, g, g]
    if causal:
        quad = quad.tril()
    kv = lk.transpose(-1, -2) @ vc                                             # [B, H, N/g, S, E]
    state = _exclusive_cumsum(kv) if causal else kv.sum(2, keepdim=True)
    y = quad @ vc + s_l * (lq @ state)
    return y.flatten(2, 3)[:, :, :n]


@torch.library.impl("attnx::mixed_chunk_attention", "CompositeExplicitAutograd")
def _mixed_chunk_attention(quad_q, quad_k, lin_q, lin_k, v, **attrs):
    attrs = mixed_chunk_attention.SPEC.resolve(attrs)
    check_mixed_chunk_inputs(quad_q, quad_k, lin_q, lin_k, v)
    return chunk_mixed_attn(quad_q, quad_k, lin_q, lin_k, v, **attrs).to(quad_q.dtype)


@torch.library.register_fake("attnx::mixed_chunk_attention")
def _mixed_chunk_attention_fake(quad_q, quad_k, lin_q, lin_k, v, **attrs):
    mixed_chunk_attention.SPEC.resolve(attrs)
    check_mixed_chunk_inputs(quad_q, quad_k, lin_q, lin_k, v)
    return quad_q.new_empty(*quad_q.shape[:3], v.shape[-1])


TORCH_OPS.update({
    sparse_attention.SPEC.name: torch.ops.attnx.sparse_attention.default,
    performer_features.SPEC.name: torch.ops.attnx.performer_features.default,
    mixed_chunk_attention.SPEC.name: torch.ops.attnx.mixed_chunk_attention.default,
})


# ReluSquaredAttention -------------------------------------------------------------------------

torch.library.define("attnx::relu_squared_attention", relu_squared_attention.SPEC.torch_schema())


def relu_squared_attn(q, k, v, bias=None, *, causal, scale, norm, fixed_length, norm_placement):
    """The eager path: the definition in float32 (float64 when given float64), dense [N, M]."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    scores = (scale or q.shape[-1] ** -0.5) * (q @ k.transpose(-1, -2))
    if bias is not None:
        scores = scores + bias.to(acc)
    lengths = relu_squared_attention.row_lengths(q.shape[2], k.shape[2], causal=causal, norm=norm,
                                                 fixed_length=fixed_length, dtype=acc).to(q.device)
    a = torch.relu(scores / lengths).square() if norm_placement == "inside" else torch.relu(scores).square() / lengths
    return (a.tril() if causal else a) @ v


def check_relu_squared_inputs(q, k, v, bias, attrs) -> None:
    """Raise `InputError` naming the tensor, what was expected and what was found."""
    op = relu_squared_attention.SPEC.name
    _check_qkv(op, q, k, v, same_length=attrs["causal"])
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
    attrs = relu_squared_attention.SPEC.resolve(attrs)
    check_relu_squared_inputs(q, k, v, bias, attrs)
    return relu_squared_attn(q, k, v, bias, **attrs).to(q.dtype)


@torch.library.register_fake("attnx::relu_squared_attention")
def _relu_squared_attention_fake(q, k, v, bias=None, **attrs):
    attrs = relu_squared_attention.SPEC.resolve(attrs)
    check_relu_squared_inputs(q, k, v, bias, attrs)
    return q.new_empty(*q.shape[:3], v.shape[-1])


TORCH_OPS[relu_squared_attention.SPEC.name] = torch.ops.attnx.relu_squared_attention.default
