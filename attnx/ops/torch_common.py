"""What the ops' torch.library custom ops share: the q/k/v input check and the eager paths' helpers.

Each op registers `torch.ops.attnx.<op>` in its own `torch_op.py`, so torch.export keeps each
call as one node; the schema is `OpSpec.torch_schema()`.
"""

from __future__ import annotations

import torch

from attnx.errors import InputError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_qkv(op: str, q, k, v, *, same_length: bool) -> None:
    """q [B, H, N, D], k [B, H, M, D], v [B, H, M, E], one float dtype; M = N when `same_length`."""
    for name, t, layout in (("q", q, "[B, H, N, D]"), ("k", k, "[B, H, M, D]"), ("v", v, "[B, H, M, E]")):
        if t.dim() != 4:
            raise InputError(f"{op}: {name} must be rank 4 {layout}, got shape {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise InputError(f"{op}: {name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InputError(f"{op}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, n, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:2] != (b, h) or k.shape[3] != d or v.shape[2] != k.shape[2]:
        raise InputError(f"{op}: shapes disagree: q {tuple(q.shape)} [B, H, N, D], k {tuple(k.shape)} "
                         f"[B, H, M, D], v {tuple(v.shape)} [B, H, M, E]")
    if same_length and k.shape[2] != n:
        raise InputError(f"{op}: keys must have the queries' length, got N={n}, M={k.shape[2]}")


def accumulation_dtype(x):
    """float32, or float64 when given float64: the eager paths accumulate in it."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def pad_to(x, multiple: int):
    """Zero-pad dim 2 of [B, H, N, D] up to a multiple of `multiple`."""
    return torch.nn.functional.pad(x, (0, 0, 0, (-x.shape[2]) % multiple))


def exclusive_cumsum(x):
    """Sum over earlier chunks (dim 2) only: the current chunk is the masked product's."""
    return torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, :-1].cumsum(2)], dim=2)
