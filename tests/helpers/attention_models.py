"""Attention written in plain torch, as other people write it, for the surgeon tests.

None of these modules uses attnx: they are what `attnx optimize` meets in the wild. Each is
exported with torch.onnx.export(dynamo=True), batch and sequence dynamic (`helpers.graphs.export`).
tests/surgeon/test_plain_modules.py checks the modules themselves against attnx's float64
references, so a pass test that finds them unchanged after a rewrite is testing the right thing.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

def elu1(x):
    return F.elu(x) + 1


class EinsumLinearAttention(torch.nn.Module):
    """Katharopoulos et al. in the quadratic spelling: (φ(q)φ(k)ᵀ)v / rowsum, einsum, [B, H, N, D]."""

    def forward(self, q, k, v):
        a = torch.einsum("bhnd,bhmd->bhnm", elu1(q), elu1(k))
        return torch.einsum("bhnm,bhme->bhne", a, v) / (a.sum(-1, keepdim=True) + 1e-6)


class MaskedCausalLinearAttention(torch.nn.Module):
    """Causal linear attention with a tril mask and masked_fill, MatMul spelling, scaled by 1/√d."""

    def forward(self, q, k, v):
        a = (elu1(q) @ elu1(k).transpose(-1, -2)) / math.sqrt(q.shape[-1])
        n = q.shape[2]
        a = a.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), 0.0)
        return (a @ v) / (a.sum(-1, keepdim=True) + 1e-6)


class CumsumCausalLinearAttention(torch.nn.Module):
    """Causal linear attention as prefix sums of k⊗v (the RNN form), einsum and cumsum."""

    def forward(self, q, k, v):
        q, k = elu1(q), elu1(k)
        s = torch.einsum("bhnd,bhne->bhnde", k, v).cumsum(2)
        y = torch.einsum("bhnd,bhnde->bhne", q, s)
        return y / (torch.einsum("bhnd,bhnd->bhn", q, k.cumsum(2)).unsqueeze(-1) + 1e-6)


class LengthNormalisedAttention(torch.nn.Module):
    """relu features divided by the sequence length (a dynamic scalar), [B, N, H, D] layout."""

    def forward(self, q, k, v):
        a = torch.einsum("bnhd,bmhd->bhnm", F.relu(q), F.relu(k)) / q.shape[1]
        return torch.einsum("bhnm,bmhe->bnhe", a, v)


class PerformerAttention(torch.nn.Module):
    """FAVOR+ (performer-pytorch's softmax_kernel) then linear attention, written quadratically."""

    def __init__(self, d: int = 8, m: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        blocks = [torch.linalg.qr(torch.randn(d, d, generator=g))[0].T for _ in range(math.ceil(m / d))]
        norms = torch.randn(m, d, generator=g).norm(dim=1, keepdim=True)
        self.register_buffer("w", torch.cat(blocks)[:m] * norms)

    def features(self, x, is_query):
        x = x * x.shape[-1] ** -0.25
        wx = torch.einsum("bhnd,md->bhnm", x, self.w)
        half = (x ** 2).sum(-1, keepdim=True) / 2
        c = wx.amax(-1, keepdim=True) if is_query else wx.amax((-2, -1), keepdim=True)
        return self.w.shape[0] ** -0.5 * (torch.exp(wx - half - c) + 1e-4)

    def forward(self, q, k, v):
        a = self.features(q, True) @ self.features(k, False).transpose(-1, -2)
        return (a @ v) / a.sum(-1, keepdim=True)


class GAU(torch.nn.Module):
    """GAU's attention as in the FLASH paper's code: relu²(QKᵀ/n) V, single head [B, N, S]."""

    def forward(self, q, k, v):
        n = q.shape[1]
        a = torch.relu(q @ k.transpose(-1, -2) / n) ** 2
        return a @ v


class SoftmaxBetweenProducts(torch.nn.Module):
    """Looks like linear attention but normalises with a softmax: must not be reassociated."""

    def forward(self, q, k, v):
        return torch.softmax(elu1(q) @ elu1(k).transpose(-1, -2), -1) @ v


class ExpBetweenProducts(torch.nn.Module):
    """exp(QKᵀ)·V / rowsum: softmax written out, a non-commuting Exp between the products."""

    def forward(self, q, k, v):
        a = torch.exp(q @ k.transpose(-1, -2) * 0.1)
        return (a @ v) / a.sum(-1, keepdim=True)


class LocalWindowAttention(torch.nn.Module):
    """Softmax attention over |i − j| ≤ 2 (a band mask), einsum: neither causal nor reassociable."""

    def forward(self, q, k, v):
        n = q.shape[2]
        i = torch.arange(n)
        band = (i[:, None] - i[None, :]).abs() <= 2
        s = torch.einsum("bhnd,bhmd->bhnm", q, k) * q.shape[-1] ** -0.5
        return torch.einsum("bhnm,bhme->bhne", torch.softmax(s.masked_fill(~band, float("-inf")), -1), v)


class CausalSoftmaxAttention(torch.nn.Module):
    """Softmax attention with a causal -inf mask, MatMul spelling."""

    def forward(self, q, k, v):
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        n = q.shape[2]
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        return torch.softmax(s, -1) @ v


M = 16  # random features per head


def projection(d=8, m=M, seed=0):
    """Blocks of orthogonal rows, rescaled to chi-distributed norms (the paper's W)."""
    g = torch.Generator().manual_seed(seed)
    blocks = [torch.linalg.qr(torch.randn(d, d, generator=g))[0].T for _ in range(math.ceil(m / d))]
    return torch.cat(blocks)[:m] * torch.randn(m, d, generator=g).norm(dim=1, keepdim=True)


class SoftmaxKernelPerformer(torch.nn.Module):
    """FAVOR+ spelled as performer-style code writes it: the normaliser applied to x and to ‖x‖²
    separately, W as a [D, M] MatMul, ratio·(exp(·) + eps); non-causal or causal (cumsum)."""

    def __init__(self, causal=False, half_norm=True, key_offset=None):
        super().__init__()
        self.causal, self.half_norm, self.key_offset = causal, half_norm, key_offset
        self.register_buffer("wt", projection().T.contiguous())

    def features(self, x, is_query):
        normalizer = x.shape[-1] ** -0.25
        wx = (x * normalizer) @ self.wt
        diag = (x ** 2).sum(-1, keepdim=True) / 2.0 * normalizer ** 2 if self.half_norm else 0.0
        stab = wx.amax(-1, keepdim=True) if is_query else wx.amax(dim=(-1, -2), keepdim=True)
        if not is_query and self.key_offset is not None:
            stab = self.key_offset  # causal-safe: one data-independent constant for every key
        return M ** -0.5 * (torch.exp(wx - diag - stab) + 1e-4)

    def forward(self, q, k, v):
        q, k = self.features(q, True), self.features(k, False)
        if self.causal:
            kv = torch.einsum("bhnm,bhne->bhnme", k, v).cumsum(2)
            y = torch.einsum("bhnm,bhnme->bhne", q, kv)
            return y / torch.einsum("bhnm,bhnm->bhn", q, k.cumsum(2)).unsqueeze(-1)
        kv = torch.einsum("bhnm,bhne->bhme", k, v)
        return torch.einsum("bhnm,bhme->bhne", q, kv) / (q @ k.sum(2, keepdim=True).transpose(-1, -2))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_every_two(x):
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


def wrong_sign(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x2, -x1), dim=-1)


class RotaryAttention(torch.nn.Module):
    """RoPE on q and k (angles p·base^(−2t/d) computed from arange(n)), then causal softmax attention."""

    def __init__(self, rotate=rotate_half, d=8):
        super().__init__()
        self.rotate = rotate
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, d, 2).float() / d))

    def angles(self, n):
        freqs = torch.outer(torch.arange(n).float(), self.inv_freq)
        if self.rotate is rotate_every_two:
            return freqs.repeat_interleave(2, -1)
        return torch.cat((freqs, freqs), -1)

    def forward(self, q, k, v):
        angles = self.angles(q.shape[2])
        cos, sin = angles.cos(), angles.sin()
        q, k = q * cos + self.rotate(q) * sin, k * cos + self.rotate(k) * sin
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


class Relu2(torch.nn.Module):
    """relu(s·qkᵀ)² with the norm outside the square (the paper's text), optional causal masked_fill."""

    def __init__(self, norm="n", causal=False, power=2, scale=0.125):
        super().__init__()
        self.norm, self.causal, self.power, self.scale = norm, causal, power, scale

    def forward(self, q, k, v):
        n = q.shape[1]
        a = torch.relu(q @ k.transpose(-1, -2) * self.scale) ** self.power
        if self.norm == "n":
            a = a / n
        elif self.norm == "fixed":
            a = a / 64
        if self.causal:
            a = a.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), 0.0)
        return a @ v


class RelPosBias(torch.nn.Module):
    """A T5-style relative-position bias as public GAU code adds it to the scores: one learned
    scalar per relative distance, clamped at ±`reach`, times `scale`; an [N, N] tensor."""

    def __init__(self, reach=12, scale=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.reach, self.scale = reach, scale
        self.emb = torch.nn.Parameter(torch.randn(2 * reach + 1, generator=g))

    def forward(self, n):
        pos = torch.arange(n)
        return self.emb[(pos[None, :] - pos[:, None]).clamp(-self.reach, self.reach) + self.reach] * self.scale


class CausalLocalAttention(torch.nn.Module):
    """Sliding-window causal attention (w keys back, the query's own included), MatMul spelling."""

    def __init__(self, window=4):
        super().__init__()
        self.window = window

    def forward(self, q, k, v):
        n = q.shape[2]
        i = torch.arange(n)
        d = i[:, None] - i[None, :]
        keep = (d >= 0) & (d < self.window)
        s = (q @ k.transpose(-1, -2)) * 0.3
        return torch.softmax(s.masked_fill(~keep, float("-inf")), -1) @ v


