"""Attention written in plain torch, as other people write it, for the surgeon tests.

None of these modules uses attnx: they are what `attnx optimize` meets in the wild. Each is
exported with torch.onnx.export(dynamo=True), batch and sequence dynamic. The tests here
check the modules themselves against attnx's float64 references, so a pass test that
finds them unchanged after a rewrite is testing the right thing.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch.nn import functional as F

from attnx.ops.linear_attention import reference as linear_reference

EXPORT_LEN = 16
# float32 reassociation and fusion change the order of sums of at most a few hundred terms
# (~1e-6 relative); a wrong mask, scale or normaliser moves outputs by 1e-2 or more
RTOL, ATOL = 1e-4, 1e-5


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


def export(module, shapes, seq_axes, opset=18):
    """module(*inputs of `shapes`) → ModelProto; axis 0 and seq_axes[i] of input i dynamic."""
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    g = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(*s, generator=g) for s in shapes)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), inputs, dynamo=True, opset_version=opset, verbose=False,
                                    input_names=[f"x{i}" for i in range(len(shapes))],
                                    dynamic_shapes=tuple({0: batch, a: seq} for a in seq_axes))
    return program.model_proto


def run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def feeds_at(shapes, seq_axes, n, rng):
    """Random float32 inputs like `shapes` with every sequence axis set to n (batch 2)."""
    out = {}
    for i, (shape, axis) in enumerate(zip(shapes, seq_axes)):
        shape = list(shape)
        shape[0], shape[axis] = 2, n
        out[f"x{i}"] = torch.randn(*shape, generator=rng).numpy()
    return out


def assert_same_outputs(before, after, shapes, seq_axes, rng, lengths=(1, 7, 37, 100)):
    """Both models agree in ONNX Runtime at lengths other than the export length, 1 included."""
    for n in lengths:
        feeds = feeds_at(shapes, seq_axes, n, rng)
        for a, b in zip(run(before, feeds), run(after, feeds)):
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=f"at sequence length {n}")


QKV = [(2, 2, EXPORT_LEN, 8)] * 3
QKV_AXES = (2, 2, 2)


def test_plain_linear_attention_modules_match_the_float64_reference(rng):
    q, k, v = (torch.randn(2, 2, 23, 8, generator=rng) for _ in range(3))
    for module, causal in ((EinsumLinearAttention(), False), (CumsumCausalLinearAttention(), True)):
        want = linear_reference(q, k, v, causal=causal, feature_map="elu", normalize=True, eps=1e-6, chunk_size=64)[0]
        torch.testing.assert_close(module(q, k, v).double(), want, rtol=1e-5, atol=1e-6)
    scaled = MaskedCausalLinearAttention()(q, k, v).double()
    # the 1/√d scale cancels in the normaliser up to eps
    want = linear_reference(q, k, v, causal=True, feature_map="elu", normalize=True, eps=1e-6 * 8 ** 0.5,
                            chunk_size=64)[0]
    torch.testing.assert_close(scaled, want, rtol=1e-5, atol=1e-6)
