"""`torch.ops.attnx.sparse_attention`: the custom op (schema from the spec), its input checks and its
fast eager path, the algorithm of the ONNX body: only allowed keys are touched.
"""

from __future__ import annotations

import torch

from attnx.ops.sparse_attention.naive import window_offsets
from attnx.ops.sparse_attention.spec import SPEC
from attnx.ops.torch_common import accumulation_dtype, check_qkv, pad_to

torch.library.define("attnx::sparse_attention", SPEC.torch_schema())


def _around(x, look_back, look_ahead):
    """[B, H, T, b, D] tiles → [B, H, T, (1 + a + c)·b, D]: each tile beside the a before it and the c after it
    (zeros past either end), in position order."""
    t = x.shape[2]
    padded = torch.nn.functional.pad(x, (0, 0, 0, 0, look_back, look_ahead))
    return torch.cat([padded[:, :, o:o + t] for o in range(look_back + look_ahead + 1)], dim=3)


def window_sparse_attn(q, k, v, *, pattern, window, dilation, stride, block, causal, scale, look_back=0,
                       look_ahead=0):
    """The fast eager path, same algorithm as the ONNX body: only allowed keys are touched."""
    acc = accumulation_dtype(q)
    attrs = dict(pattern=pattern, window=window, dilation=dilation, stride=stride, block=block, causal=causal)
    q, k, v = q.to(acc) * (scale or q.shape[-1] ** -0.5), k.to(acc), v.to(acc)
    n = q.shape[2]
    if pattern == "block":
        qt, kt, vt = (pad_to(x, block).unflatten(2, (-1, block)) for x in (q, k, v))
        kt, vt = _around(kt, look_back, look_ahead), _around(vt, look_back, look_ahead)
        tiles = torch.arange(qt.shape[2], device=q.device).view(-1, 1, 1) * block
        slots = torch.arange(-look_back * block, (look_ahead + 1) * block, device=q.device)
        key_pos = tiles + slots                                                # [N/b, 1, L]
        keep = (key_pos >= 0) & (key_pos < n)
        if causal:
            keep = keep & (key_pos <= tiles + torch.arange(block, device=q.device).view(-1, 1))  # j <= i
        scores = (qt @ kt.transpose(-1, -2)).masked_fill(~keep, float("-inf"))
        return (torch.softmax(scores, -1) @ vt).flatten(2, 3)[:, :, :n]
    offsets = torch.tensor(window_offsets(attrs), device=q.device)
    span = int(offsets.abs().max())
    j = torch.arange(n, device=q.device)[:, None] - offsets                   # [N, L]
    keep = (j >= 0) & (j < n)
    kw, vw = (torch.nn.functional.pad(x, (0, 0, span, span))[:, :, j + span] for x in (k, v))  # [B, H, N, L, ·]
    local = torch.einsum("bhnd,bhnld->bhnl", q, kw).masked_fill(~keep, float("-inf"))
    if pattern != "strided":
        return torch.einsum("bhnl,bhnle->bhne", torch.softmax(local, -1), vw)
    qr, kr, vr = (pad_to(x, stride).unflatten(2, (-1, stride)).transpose(2, 3) for x in (q, k, v))  # [B, H, t, A, ·]
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
    p_far = pad_to(p_far, stride).unflatten(2, (-1, stride)).transpose(2, 3)  # [B, H, t, A, A]
    y_far = (p_far @ vr).transpose(2, 3).flatten(2, 3)[:, :, :n]
    return torch.einsum("bhnl,bhnle->bhne", p_local, vw) + y_far


@torch.library.impl("attnx::sparse_attention", "CompositeExplicitAutograd")
def _sparse_attention(q, k, v, **attrs):
    attrs = SPEC.resolve(attrs)
    check_qkv(SPEC.name, q, k, v, same_length=True)
    return window_sparse_attn(q, k, v, **attrs).to(q.dtype)


@torch.library.register_fake("attnx::sparse_attention")
def _sparse_attention_fake(q, k, v, **attrs):
    SPEC.resolve(attrs)
    check_qkv(SPEC.name, q, k, v, same_length=True)
    return q.new_empty(*q.shape[:3], v.shape[-1])


OP = torch.ops.attnx.sparse_attention.default
