"""Performer: the random projection, PerformerFeatures against a row-by-row loop, the eager path
and the ONNX body against the float64 reference, the key stabiliser cancelling, and FAVOR+
approximating softmax attention.

Tolerances: float64 paths agree to 1e-10. Features are exp of values of order 1 divided by
√M, so float32 paths (eager, ONNX body) are held to 1e-6 absolute and 1e-5 relative
(float32 rounds exp at 6e-8 relative; measured 4e-8 absolute).
"""

import math

import numpy as np
import pytest
import torch

from attnx.errors import AttributeValueError, InputError
from attnx.models.performer import Performer, orthogonal_random_features, reference
from attnx.ops import linear_attention as la
from attnx.ops import performer_features as pf
from attnx.ops.torch_ops import favor_features
from helpers.onnx_node import one_node_session

LENGTHS = (1, 13, 37, 130)


def naive_features(x, w, *, kind, eps, offset=0.0):
    """Row by row, the formula as VARIANTS.md writes it."""
    x, w = x.double(), w.double()
    b, h, n, d = x.shape
    m = w.shape[0]
    xs = x * d ** -0.25
    out = torch.zeros(b, h, n, m, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            key_c = max(float(w[f] @ xs[bi, hi, j]) for j in range(n) for f in range(m))
            for i in range(n):
                wx = w @ xs[bi, hi, i]
                c = {"query": float(wx.max()), "key": key_c, "key_fixed": offset}[kind]
                out[bi, hi, i] = torch.exp(wx - xs[bi, hi, i].square().sum() / 2 - c) / math.sqrt(m) + eps
    return out


@pytest.mark.parametrize("kind", pf.KINDS)
def test_reference_equals_naive_loop(kind, rng):
    x, w = torch.randn(2, 2, 7, 4, generator=rng), torch.randn(6, 4, generator=rng)
    torch.testing.assert_close(pf.reference(x, w, kind=kind, eps=1e-4, offset=0.7)[0],
                               naive_features(x, w, kind=kind, eps=1e-4, offset=0.7), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind, offset", [(kind, 0.0) for kind in pf.KINDS] + [("key_fixed", 1.5)])
@pytest.mark.parametrize("n", LENGTHS)
def test_eager_path_and_onnx_body_match_reference(kind, offset, n, rng):
    attrs = pf.SPEC.resolve({"kind": kind, "offset": offset})
    session = one_node_session("PerformerFeatures", attrs, {"x": 4, "w": 2})
    x, w = torch.randn(2, 3, n, 16, generator=rng), orthogonal_random_features(24, 16, generator=rng)
    ref = pf.reference(x, w, **attrs)[0]
    torch.testing.assert_close(favor_features(x, w, **attrs).double(), ref, rtol=1e-5, atol=1e-6)
    (got,) = session.run(None, {"x": x.numpy(), "w": w.numpy()})
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_orthogonal_features_are_orthogonal_within_blocks_with_chi_norms():
    g = torch.Generator().manual_seed(0)
    w = orthogonal_random_features(40, 16, generator=g).double()
    for block in (w[:16], w[16:32]):
        gram = block @ block.T
        off = gram - torch.diag(gram.diag())
        assert off.abs().max() < 1e-4 * gram.diag().max()
    norms = w.norm(dim=1)
    # chi with 16 degrees of freedom: mean √2·Γ(8.5)/Γ(8) ≈ 3.94; not all equal (they are drawn)
    assert 3.0 < norms.mean() < 5.0 and norms.std() > 0.1
    again = orthogonal_random_features(40, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, w.float())


@pytest.mark.parametrize("causal", (False, True))
def test_key_stabiliser_cancels_in_the_normaliser(causal, rng):
    """One constant over all keys changes nothing once normalised (features eps 0, so exactly)."""
    q, k, v = (torch.randn(1, 2, 19, 8, generator=rng) for _ in range(3))
    w = orthogonal_random_features(16, 8, generator=rng)
    fq = pf.reference(q, w, kind="query", eps=0.0, offset=0.0)[0]
    fk = pf.reference(k, w, kind="key", eps=0.0, offset=0.0)[0]
    ks = k.double() * 8 ** -0.25
    fk_plain = torch.exp(ks @ w.double().T - ks.square().sum(-1, keepdim=True) / 2) / 4
    attn = dict(causal=causal, feature_map="identity", normalize=True, eps=1e-300, chunk_size=4)
    torch.testing.assert_close(la.reference(fq, fk, v, **attn)[0], la.reference(fq, fk_plain, v, **attn)[0],
                               rtol=1e-10, atol=1e-10)
    # the causal-safe fixed constant cancels the same way
    fk_fixed = pf.reference(k, w, kind="key_fixed", eps=0.0, offset=2.5)[0]
    torch.testing.assert_close(la.reference(fq, fk_fixed, v, **attn)[0], la.reference(fq, fk_plain, v, **attn)[0],
                               rtol=1e-10, atol=1e-10)
    # a per-key constant (the query rule applied to keys) does not cancel
    fk_rows = pf.reference(k, w, kind="query", eps=0.0, offset=0.0)[0]
    assert (la.reference(fq, fk_rows, v, **attn)[0] - la.reference(fq, fk, v, **attn)[0]).abs().max() > 1e-3


def test_favor_approximates_softmax_attention_with_many_features():
    """With M = 4096 features the estimate is within a few percent of exact softmax attention.

    The estimate is Monte Carlo, so its error is itself random: one fresh draw in a CI run came
    out at 11.7% of the largest output. This test therefore draws once from a fixed seed (5.8%
    here); on the same draw a missing −‖x‖²/2 is off by 27% and a d^-1/2 instead of d^-1/4
    scale by 18%, so the bound still tells a wrong feature map from the right one.
    """
    rng = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 1, 24, 8, generator=rng) * 0.5 for _ in range(2))
    v = torch.randn(1, 1, 24, 4, generator=rng)
    w = orthogonal_random_features(4096, 8, generator=rng)
    approx = reference(q, k, v, w, causal=False, eps=0.0)
    exact = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(8), -1) @ v.double()
    assert (approx - exact).abs().max() < 0.1 * exact.abs().max()


def test_fixed_key_features_of_a_prefix_are_the_prefix_of_the_features_and_sequence_max_ones_are_not(rng):
    """key_fixed is causal-safe: key j's features do not depend on later keys. The sequence
    maximum (key) is not: a later, larger key lowers every earlier key's features."""
    k, w = torch.randn(2, 3, 20, 8, generator=rng), orthogonal_random_features(16, 8, generator=rng)
    k[:, :, -1] = 4 * k[:, :, :-1].abs().amax(2)  # a last key whose W x' exceeds every earlier one's
    for kind, prefix_safe in (("key_fixed", True), ("key", False)):
        full = pf.reference(k, w, kind=kind, eps=1e-4, offset=0.0)[0][:, :, :12]
        prefix = pf.reference(k[:, :, :12], w, kind=kind, eps=1e-4, offset=0.0)[0]
        assert torch.allclose(full, prefix, rtol=1e-12, atol=1e-12) == prefix_safe, kind


def test_causal_module_uses_the_fixed_key_stabiliser_and_matches_a_step_by_step_recurrence(rng):
    """Causal Performer as an RNN: y_i = φ(q_i)·S_i / (φ(q_i)·z_i + eps) with S, z summed token by
    token, each key's features computed from that key alone (kind key_fixed, offset 0)."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = Performer(32, 4, features=16, causal=True, chunk_size=8).double().eval()
    x = torch.randn(2, 21, 32, generator=rng, dtype=torch.float64)
    q, k, v = m.qkv(x).unflatten(-1, (3, 4, 8)).permute(2, 0, 3, 1, 4)
    fq = pf.reference(q, m.projection, kind="query", eps=1e-4, offset=0.0)[0]
    fk = torch.cat([pf.reference(k[:, :, t:t + 1], m.projection, kind="key_fixed", eps=1e-4, offset=0.0)[0]
                    for t in range(21)], 2)
    s, z, steps = torch.zeros(2, 4, 16, 8, dtype=torch.float64), torch.zeros(2, 4, 16, dtype=torch.float64), []
    for t in range(21):
        s = s + fk[:, :, t, :, None] * v[:, :, t, None, :]
        z = z + fk[:, :, t]
        steps.append(torch.einsum("bhm,bhme->bhe", fq[:, :, t], s) / ((fq[:, :, t] * z).sum(-1, keepdim=True) + 1e-6))
    y = torch.stack(steps, 2)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.out(y.transpose(1, 2).flatten(2)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("x, w, message", [
    (torch.zeros(2, 5, 8), torch.zeros(4, 8), r"x must be rank 4 \[B, H, N, D\], got shape \(2, 5, 8\)"),
    (torch.zeros(1, 2, 5, 8), torch.zeros(4, 6), r"w must be \[M, D\] with D = 8 \(x's last dim\), got shape \(4, 6\)"),
    (torch.zeros(1, 2, 5, 8), torch.zeros(4, 8, dtype=torch.float64), "x and w must share a float dtype"),
])
def test_wrong_inputs_say_what_was_expected(x, w, message):
    with pytest.raises(InputError, match=message):
        torch.ops.attnx.performer_features(x, w)


def test_bad_kind_says_what_is_allowed():
    with pytest.raises(AttributeValueError, match="'kind' = 'value' is not allowed; expected one of 'query', 'key', 'key_fixed'"):
        torch.ops.attnx.performer_features(torch.zeros(1, 1, 2, 4), torch.zeros(3, 4), kind="value")
