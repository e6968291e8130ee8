"""TransNormer: NormAttention against its float64 reference, DiagAttention as block-diagonal softmax,
and the layer layout (Diag below, Norm above).

Tolerance 1e-10: the module runs in float64 and only summation order differs from the reference.
"""

import torch

from attnx.models.sparse_attention import SparseAttention
from attnx.models.transnormer import NormAttention, reference, transnormer_lm
from attnx.ops import sparse_attention as sa


def test_norm_attention_matches_reference(rng):
    torch.manual_seed(0)
    m = NormAttention(16, 2, causal=True, chunk_size=4).double().eval()
    with torch.no_grad():
        m.norm.weight.copy_(torch.rand(8, generator=rng) + 0.5)
    x = torch.randn(2, 11, 16, generator=rng, dtype=torch.float64)
    q, k, v = m.qkv(x).unflatten(-1, (3, 2, 8)).permute(2, 0, 3, 1, 4)
    gate = torch.nn.functional.silu(m.gate(x)).unflatten(-1, (2, 8)).transpose(1, 2)
    y = reference(q, k, v, gate, m.norm.weight, causal=True)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.out(y.transpose(1, 2).flatten(2)), rtol=1e-10, atol=1e-10)


def test_diag_below_norm_above_and_diag_is_block_softmax(rng):
    lm = transnormer_lm(layers=4, heads=2, block=5)
    kinds = [type(b.attention) for b in lm.blocks]
    assert kinds == [SparseAttention, SparseAttention, NormAttention, NormAttention]
    diag = lm.blocks[0].attention
    assert diag.attrs["pattern"] == "block" and diag.attrs["block"] == 5 and diag.attrs["causal"]
    q, k, v = (torch.randn(1, 2, 12, 16, generator=rng, dtype=torch.float64) for _ in range(3))
    y = sa.reference(q, k, v, **diag.attrs)[0]
    # block 1 (positions 5..9) is independent of everything outside it
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :5], v2[:, :, 10:] = 0, 0
    torch.testing.assert_close(sa.reference(q, k2, v2, **diag.attrs)[0][:, :, 5:10], y[:, :, 5:10])
