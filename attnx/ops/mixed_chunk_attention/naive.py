"""MixedChunkAttention in float64, as written down: the dense definition, the paper's steps chunk
by chunk, and the causal recurrent step a decoder takes per token.

Every other implementation (the ONNX body, the eager chunked path, the CUDA kernels) is tested
against `reference`.
"""

from __future__ import annotations

import torch


def scales(n, *, causal, chunk_size, quad_scale, lin_scale) -> tuple[float, float]:
    """(s_q, s_l) for sequence length n, defaults filled in."""
    s_q = quad_scale or 1.0 / chunk_size
    s_l = lin_scale or (1.0 / chunk_size if causal else 1.0 / n)
    return s_q, s_l


def in_chunk_bias(bias, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | float:
    """bias [B|1, H|1, g|1, g|1] at positions inside the chunk rows × cols (broadcast axes stay 1), in
    float64; 0 without one."""
    if bias is None:
        return 0.0
    bias = bias.double()
    rows = rows if bias.shape[2] > 1 else torch.zeros_like(rows)
    cols = cols if bias.shape[3] > 1 else torch.zeros_like(cols)
    return bias[:, :, rows[:, None], cols[None, :]]


def reference(quad_q, quad_k, lin_q, lin_k, v, bias=None, *, causal, chunk_size, quad_scale, lin_scale):
    """Float64 definition, dense. quad_q/quad_k/lin_q/lin_k [B, H, N, S], v [B, H, N, E], bias
    [B|1, H|1, g|1, g|1] or None → (y,)."""
    qq, qk, lq, lk, v = (x.double() for x in (quad_q, quad_k, lin_q, lin_k, v))
    n = qq.shape[2]
    s_q, s_l = scales(n, causal=causal, chunk_size=chunk_size, quad_scale=quad_scale, lin_scale=lin_scale)
    pos = torch.arange(n)
    chunk = torch.div(pos, chunk_size, rounding_mode="floor")
    same = chunk[:, None] == chunk[None, :]
    if causal:
        same = same & (pos[:, None] >= pos[None, :])
        across = chunk[:, None] > chunk[None, :]
    else:
        across = torch.ones(n, n, dtype=torch.bool)
    inside = pos % chunk_size
    quad = torch.relu(s_q * qq @ qk.transpose(-1, -2) + in_chunk_bias(bias, inside, inside)).square() * same
    lin = s_l * (lq @ lk.transpose(-1, -2)) * across
    return ((quad + lin) @ v,)


def naive_chunkwise_mixed_chunk_attn(quad_q, quad_k, lin_q, lin_k, v, bias=None, *, causal, chunk_size,
                                     quad_scale, lin_scale):
    """Chunk by chunk in float64, the paper's steps: quadratic inside the chunk, linear over (earlier)
    chunks. Shapes as in `reference`."""
    qq, qk, lq, lk, v = (x.double() for x in (quad_q, quad_k, lin_q, lin_k, v))
    n, g = qq.shape[2], chunk_size
    s_q, s_l = scales(n, causal=causal, chunk_size=g, quad_scale=quad_scale, lin_scale=lin_scale)
    y = torch.zeros(*qq.shape[:3], v.shape[-1], dtype=torch.float64)
    for start in range(0, n, g):
        rows = slice(start, min(start + g, n))
        inside = torch.arange(rows.stop - start)  # a short last chunk reads the bias's first rows and columns
        kernel = torch.relu(s_q * qq[:, :, rows] @ qk[:, :, rows].transpose(-1, -2)
                            + in_chunk_bias(bias, inside, inside)) ** 2
        if causal:
            kernel = kernel.tril()
        y[:, :, rows] = kernel @ v[:, :, rows]
        keys = slice(0, start) if causal else slice(0, n)
        state = lk[:, :, keys].transpose(-1, -2) @ v[:, :, keys]
        y[:, :, rows] += s_l * lq[:, :, rows] @ state
    return y


def recurrent_step(quad_q, quad_k, lin_q, lin_k, v, state, bias=None, *, chunk_size, quad_scale, lin_scale):
    """One causal token: quad_q, quad_k, lin_q, lin_k [B, H, 1, S], v [B, H, 1, E] after `state` →
    (y [B, H, 1, E], next state), in the inputs' dtype; `bias` as in `reference`.

    state = (Σ k'_j v_jᵀ over finished chunks [B, H, S, E], and the current chunk's quadratic keys,
    linear keys and values so far [B, H, L, ·], L < g). When the token finishes its chunk, the chunk
    moves into the sum and the cache empties.
    """
    s_lin, past_qk, past_lk, past_v = state
    quad_k, lin_k, v = (torch.cat([p, t], dim=2) for p, t in ((past_qk, quad_k), (past_lk, lin_k), (past_v, v)))
    g = chunk_size
    s_q, s_l = scales(g, causal=True, chunk_size=g, quad_scale=quad_scale, lin_scale=lin_scale)
    # every cached key is in the new token's chunk and not after it; the state is the chunks before
    scores = s_q * quad_q @ quad_k.transpose(-1, -2)
    if bias is not None:  # the token sits at position L of its chunk, its keys at 0..L
        cached = quad_k.shape[2]
        scores = scores + in_chunk_bias(bias, torch.tensor([cached - 1]), torch.arange(cached)).to(scores.dtype)
    quad = torch.relu(scores).square()
    y = quad @ v + s_l * (lin_q @ s_lin)
    done = v.shape[2] // g * g
    s_lin = s_lin + lin_k[:, :, :done].transpose(-1, -2) @ v[:, :, :done]
    return y, (s_lin, quad_k[:, :, done:], lin_k[:, :, done:], v[:, :, done:])
