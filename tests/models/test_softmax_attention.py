"""Softmax attention and its length-aware scales against the float64 definition."""

import math

import pytest
import torch

from attnx.errors import AttributeValueError
from attnx.models import SoftmaxAttention
from attnx.models.softmax_attention import length_scale, naive_softmax_attention


def loop_softmax(q, k, v, scale_of_row, causal):
    """Row by row in float64, with the row's own scale."""
    q, k, v = q.double(), k.double(), v.double()
    y = torch.zeros(*q.shape[:3], v.shape[-1], dtype=torch.float64)
    for i in range(q.shape[2]):
        m = i + 1 if causal else k.shape[2]
        s = torch.einsum("bhd,bhmd->bhm", q[:, :, i], k[:, :, :m]) * scale_of_row(i)
        y[:, :, i] = torch.einsum("bhm,bhme->bhe", torch.softmax(s, -1), v[:, :, :m])
    return y


@pytest.mark.parametrize("mode", ["default", "log_n", "fixed"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 37])
def test_module_attention_matches_row_loop(mode, causal, n, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    module = SoftmaxAttention(32, 4, causal=causal, scale_mode=mode, n_train=16, fixed_scale=0.3).double()
    x = torch.randn(2, n, 32, generator=rng, dtype=torch.float64)
    q, k, v = module.project(x)
    base = 0.3 if mode == "fixed" else 1 / math.sqrt(8)

    def scale_of_row(i):
        visible = i + 1 if causal else n
        return base * (math.log(visible) / math.log(16) if mode == "log_n" else 1.0)

    # project() already put the length factor on q: undo nothing, compare the attention with `base`
    got = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=base)
    q_raw = module.qkv(x).unflatten(-1, (3, 4, 8)).permute(2, 0, 3, 1, 4)[0]
    expected = loop_softmax(q_raw, k, v, scale_of_row, causal)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(naive_softmax_attention(q, k, v, scale=base, causal=causal), expected,
                               rtol=1e-10, atol=1e-10)


def test_log_n_scale_is_one_at_the_training_length_and_grows_past_it():
    col = length_scale(64, causal=False, n_train=64)
    assert col.shape == (64, 1) and torch.allclose(col, torch.ones(64, 1))
    assert length_scale(256, causal=False, n_train=64)[0, 0] == pytest.approx(math.log(256) / math.log(64))
    strict = length_scale(5, causal=True, n_train=4)
    assert torch.allclose(strict[:, 0], torch.log(torch.arange(1.0, 6.0)) / math.log(4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale_mode="cosine"), "scale_mode = 'cosine' is not allowed"),
    (dict(scale_mode="fixed"), "needs fixed_scale > 0"),
    (dict(scale_mode="log_n", n_train=1), "n_train must be >= 2"),
])
def test_bad_scale_settings_are_refused(kwargs, message):
    with pytest.raises(AttributeValueError, match=message):
        SoftmaxAttention(16, 2, **kwargs)
