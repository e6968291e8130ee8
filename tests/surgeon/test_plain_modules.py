"""The plain-torch attention of tests/helpers/attention_models.py against attnx's float64 references."""

import torch

from attnx.ops.linear_attention import reference as linear_reference
from helpers.attention_models import (CumsumCausalLinearAttention, EinsumLinearAttention,
                                      MaskedCausalLinearAttention)


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


