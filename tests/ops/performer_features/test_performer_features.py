"""PerformerFeatures: the reference against its row-by-row form, the eager path and the ONNX body
against the reference, the key stabiliser cancelling, and key_fixed being causal-safe.

Tolerances: float64 paths agree to 1e-10. Features are exp of values of order 1 divided by
√M, so float32 paths (eager, ONNX body) are held to 1e-6 absolute and 1e-5 relative
(float32 rounds exp at 6e-8 relative; measured 4e-8 absolute).
"""

import numpy as np
import pytest
import torch

from attnx.errors import AttributeValueError, InputError
from attnx.models.performer import orthogonal_random_features
from attnx.ops import linear_attention as la
from attnx.ops import performer_features as pf
from helpers.onnx_node import one_node_session

LENGTHS = (1, 13, 37, 130)


@pytest.mark.parametrize("kind", pf.KINDS)
def test_reference_equals_naive_loop(kind, rng):
    x, w = torch.randn(2, 2, 7, 4, generator=rng), torch.randn(6, 4, generator=rng)
    torch.testing.assert_close(pf.reference(x, w, kind=kind, eps=1e-4, offset=0.7)[0],
                               pf.naive_rowwise_favor_features(x, w, kind=kind, eps=1e-4, offset=0.7),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind, offset", [(kind, 0.0) for kind in pf.KINDS] + [("key_fixed", 1.5)])
@pytest.mark.parametrize("n", LENGTHS)
def test_eager_path_and_onnx_body_match_reference(kind, offset, n, rng):
    attrs = pf.SPEC.resolve({"kind": kind, "offset": offset})
    session = one_node_session("PerformerFeatures", attrs, {"x": 4, "w": 2})
    x, w = torch.randn(2, 3, n, 16, generator=rng), orthogonal_random_features(24, 16, generator=rng)
    ref = pf.reference(x, w, **attrs)[0]
    torch.testing.assert_close(pf.favor_features(x, w, **attrs).double(), ref, rtol=1e-5, atol=1e-6)
    (got,) = session.run(None, {"x": x.numpy(), "w": w.numpy()})
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-6)


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


def test_fixed_key_features_of_a_prefix_are_the_prefix_of_the_features_and_sequence_max_ones_are_not(rng):
    """key_fixed is causal-safe: key j's features do not depend on later keys. The sequence
    maximum (key) is not: a later, larger key lowers every earlier key's features."""
    k, w = torch.randn(2, 3, 20, 8, generator=rng), orthogonal_random_features(16, 8, generator=rng)
    k[:, :, -1] = 4 * k[:, :, :-1].abs().amax(2)  # a last key whose W x' exceeds every earlier one's
    for kind, prefix_safe in (("key_fixed", True), ("key", False)):
        full = pf.reference(k, w, kind=kind, eps=1e-4, offset=0.0)[0][:, :, :12]
        prefix = pf.reference(k[:, :, :12], w, kind=kind, eps=1e-4, offset=0.0)[0]
        assert torch.allclose(full, prefix, rtol=1e-12, atol=1e-12) == prefix_safe, kind


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
