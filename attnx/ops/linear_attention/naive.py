"""LinearAttention in float64, as written down: the dense definition and the recurrent (RNN) form.

Every other implementation (the ONNX body, the eager chunked path, the CUDA kernels) is tested
against `reference`; `recurrent_step` is the one token-by-token step, used by the models'
streaming and by the tests' recurrence.
"""

from __future__ import annotations

import torch

FEATURE_MAPS = {
    "elu": lambda x: torch.nn.functional.elu(x) + 1,
    "relu": torch.relu,
    "identity": lambda x: x,
}


def reference(q, k, v, state_s=None, state_z=None, *, causal, feature_map, normalize, eps, chunk_size):
    """Float64 definition. q [B, H, N, D], k [B, H, M, D], v [B, H, M, E] → (y, S, z)."""
    del chunk_size  # tiling only; no effect on the result
    q, k, v = q.double(), k.double(), v.double()
    fq, fk = FEATURE_MAPS[feature_map](q), FEATURE_MAPS[feature_map](k)
    scores = torch.einsum("bhnd,bhmd->bhnm", fq, fk)
    if causal:
        scores = scores.tril()
    num = scores @ v
    den = scores.sum(-1)
    s = torch.einsum("bhmd,bhme->bhde", fk, v)
    z = fk.sum(2)
    if state_s is not None:
        num = num + fq @ state_s.double()
        den = den + torch.einsum("bhnd,bhd->bhn", fq, state_z.double())
        s, z = s + state_s.double(), z + state_z.double()
    y = num / (den + eps).unsqueeze(-1) if normalize else num
    return y, s, z


def add_key(k, v, s, z, *, feature_map):
    """The state after one more key: k [B, H, D], v [B, H, E], s [B, H, D, E], z [B, H, D] → (s, z),
    in s's dtype."""
    fk = FEATURE_MAPS[feature_map](k.to(s.dtype))
    return s + fk.unsqueeze(-1) * v.to(s.dtype).unsqueeze(-2), z + fk


def read_state(q, s, z, *, feature_map, normalize, eps):
    """One query q [B, H, D] over the state s [B, H, D, E], z [B, H, D] → y [B, H, E], in s's dtype."""
    fq = FEATURE_MAPS[feature_map](q.to(s.dtype))
    y = torch.einsum("bhd,bhde->bhe", fq, s)
    return y / ((fq * z).sum(-1, keepdim=True) + eps) if normalize else y


def recurrent_step(q, k, v, s, z, *, feature_map, normalize, eps):
    """One causal token: q, k [B, H, D], v [B, H, E] after the keys summed in s [B, H, D, E],
    z [B, H, D] → (y [B, H, E], s, z), the token's own key included; in s's dtype."""
    s, z = add_key(k, v, s, z, feature_map=feature_map)
    return read_state(q, s, z, feature_map=feature_map, normalize=normalize, eps=eps), s, z


def naive_recurrent_linear_attn(q, k, v, state_s=None, state_z=None, *, causal, feature_map, normalize, eps):
    """Token by token in float64 → (y [B, H, N, E], S, z). Causal: query i reads the state after keys
    0..i; otherwise every query reads the state after all M keys."""
    q, k, v = q.double(), k.double(), v.double()
    b, h, n, d = q.shape
    s = state_s.double() if state_s is not None else q.new_zeros(b, h, d, v.shape[-1])
    z = state_z.double() if state_z is not None else q.new_zeros(b, h, d)
    rule = dict(feature_map=feature_map, normalize=normalize, eps=eps)
    if causal:
        ys = []
        for i in range(n):
            y, s, z = recurrent_step(q[:, :, i], k[:, :, i], v[:, :, i], s, z, **rule)
            ys.append(y)
        return torch.stack(ys, 2), s, z
    for j in range(k.shape[2]):
        s, z = add_key(k[:, :, j], v[:, :, j], s, z, feature_map=feature_map)
    return torch.stack([read_state(q[:, :, i], s, z, **rule) for i in range(n)], 2), s, z
