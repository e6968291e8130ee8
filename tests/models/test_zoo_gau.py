"""GAU: the module's attention against a row-by-row float64 reference for every length norm,
placement and the softmax alternative; causal rows against prefix runs; bad settings.

Tolerance 1e-10: the module runs in float64 and only summation order differs from the loop.
"""

import pytest
import torch

from attnx.errors import AttributeValueError
from attnx.models.gau import GAU, reference, relu_squared_attention

SETTINGS = [dict(attention="relu2", causal=c, norm=n, norm_placement=p)
            for c in (False, True) for n in ("n", "visible", "fixed", "none") for p in ("outside", "inside")]
SETTINGS += [dict(attention="softmax", causal=c) for c in (False, True)]


def setting_id(s):
    return "-".join(str(v) for v in s.values())


def module(rng, **settings):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    return GAU(16, qk_dim=8, fixed_length=7, n_train=8, **settings).double().eval()


@pytest.mark.parametrize("settings", SETTINGS, ids=setting_id)
@pytest.mark.parametrize("n", (1, 13))
def test_module_matches_row_by_row_reference(settings, n, rng):
    m = module(rng, **settings)
    x = torch.randn(2, n, 16, generator=rng, dtype=torch.float64)
    u, v, q, k = m.project(x)
    y = reference(q.squeeze(1), k.squeeze(1), v, fixed_length=7, n_train=8, **settings)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.out(u * y), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("settings", [dict(attention="relu2", causal=True, norm="visible"),
                                      dict(attention="softmax", causal=True)], ids=setting_id)
def test_causal_rows_with_per_row_norms_equal_runs_on_each_prefix(settings, rng):
    """With the visible count (or log of it) a causal row depends on earlier tokens only."""
    m = module(rng, **settings)
    x = torch.randn(1, 12, 16, generator=rng, dtype=torch.float64)
    with torch.no_grad():
        full = m(x)
        for i in range(12):
            torch.testing.assert_close(m(x[:, :i + 1])[:, -1], full[:, i], rtol=1e-10, atol=1e-10)


def test_norm_n_makes_early_rows_depend_on_the_total_length(rng):
    """relu²/n divides every row by the whole length: why it does not generalise (Su)."""
    m = module(rng, attention="relu2", causal=True, norm="n")
    x = torch.randn(1, 12, 16, generator=rng, dtype=torch.float64)
    with torch.no_grad():
        assert (m(x[:, :6])[:, -1] - m(x)[:, 5]).abs().max() > 1e-6


def test_placement_inside_and_outside_differ_by_the_norm(rng):
    """relu(s/L)² = relu(s)²/L²: inside equals outside with the norm squared."""
    q, k, v = (torch.randn(1, 9, 4, generator=rng) for _ in range(3))
    inside = reference(q, k, v, attention="relu2", causal=False, norm="fixed", fixed_length=3, norm_placement="inside")
    outside = reference(q, k, v, attention="relu2", causal=False, norm="fixed", fixed_length=9,
                        norm_placement="outside")
    torch.testing.assert_close(inside, outside, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(norm="length"), "norm = 'length' is not allowed; expected one of 'n', 'visible', 'fixed', 'none'"),
    (dict(norm_placement="before"), "norm_placement = 'before' is not allowed"),
    (dict(attention="linear"), "attention = 'linear' is not allowed; expected one of 'relu2', 'softmax'"),
    (dict(n_train=1), "n_train >= 2"),
])
def test_bad_settings_say_what_is_allowed(kwargs, message):
    with pytest.raises(AttributeValueError, match=message):
        GAU(16, **kwargs)


@pytest.mark.parametrize("settings", [s for s in SETTINGS if s["attention"] == "relu2"], ids=setting_id)
def test_the_op_call_equals_the_plain_torch_formula(settings, rng):
    """The module calls attnx::relu_squared_attention; the plain-ops form is the same formula."""
    m = module(rng, **settings)
    q, k = (torch.randn(2, 1, 11, 8, generator=rng, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 1, 11, 6, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(torch.ops.attnx.relu_squared_attention(q, k, v, **m.relu2),
                               relu_squared_attention(q, k, v, **m.relu2), rtol=1e-12, atol=1e-12)
