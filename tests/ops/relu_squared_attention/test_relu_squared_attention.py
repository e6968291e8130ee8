"""ReluSquaredAttention: reference vs its row-by-row form, eager path and ONNX body vs the reference.

Tolerances: the float64 reference and the loop differ only in summation order (1e-10). The
float32 eager path and ONNX body are held to 1e-4 relative and absolute: scores of order 1 are
squared and summed over up to 300 keys, then divided by a length of up to 300.
"""

import numpy as np
import pytest
import torch

from attnx.errors import AttributeValueError, InputError
from attnx.ops import relu_squared_attention as rs
from helpers.onnx_node import one_node_session

COMBOS = [dict(causal=c, norm=n, norm_placement=p) for c in (False, True) for n in rs.NORMS for p in rs.PLACEMENTS]


def ident(a):
    return "-".join(f"{k}={v}" for k, v in a.items())


def qkv(rng, n, d=8, e=6):
    return (torch.randn(2, 3, n, d, generator=rng), torch.randn(2, 3, n, d, generator=rng),
            torch.randn(2, 3, n, e, generator=rng))


@pytest.mark.parametrize("attrs", COMBOS, ids=ident)
def test_reference_equals_row_loop(attrs, rng):
    attrs = dict(attrs, scale=0.0, fixed_length=7)
    for n in (1, 13):
        q, k, v = qkv(rng, n)
        torch.testing.assert_close(rs.reference(q, k, v, **attrs)[0],
                                   rs.naive_rowwise_relu_squared_attn(q, k, v, **attrs), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attrs", COMBOS, ids=ident)
def test_eager_path_and_onnx_body_match_the_reference(attrs, rng):
    attrs = dict(attrs, scale=0.3, fixed_length=64)
    session = one_node_session("ReluSquaredAttention", attrs, {"q": 4, "k": 4, "v": 4})
    for n in (1, 37, 300):
        q, k, v = qkv(rng, n)
        ref = rs.reference(q, k, v, **attrs)[0]
        torch.testing.assert_close(rs.relu_squared_attn(q, k, v, **attrs).double(), ref, rtol=1e-4, atol=1e-4)
        (got,) = session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-4)


BIAS_SHAPES = [lambda n: (2, 3, n, n), lambda n: (1, 1, n, n), lambda n: (1, 3, 1, n), lambda n: (2, 1, n, 1)]


@pytest.mark.parametrize("attrs", [COMBOS[0], COMBOS[3], COMBOS[-1]], ids=ident)
def test_bias_reference_equals_row_loop(attrs, rng):
    attrs = dict(attrs, scale=0.0, fixed_length=7)
    for n in (1, 13):
        q, k, v = qkv(rng, n)
        for shape in BIAS_SHAPES:
            bias = torch.randn(*shape(n), generator=rng)
            torch.testing.assert_close(rs.reference(q, k, v, bias, **attrs)[0],
                                       rs.naive_rowwise_relu_squared_attn(q, k, v, bias, **attrs),
                                       rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attrs", COMBOS, ids=ident)
def test_bias_eager_path_and_onnx_body_match_the_reference(attrs, rng):
    """The bias moves the result (it is added before the relu, so it changes which scores survive)."""
    attrs = dict(attrs, scale=0.3, fixed_length=64)
    session = one_node_session("ReluSquaredAttention", attrs, {"q": 4, "k": 4, "v": 4, "bias": 4})
    for n, shape in zip((1, 37, 300, 37), BIAS_SHAPES):
        q, k, v = qkv(rng, n)
        bias = torch.randn(*shape(n), generator=rng)
        ref = rs.reference(q, k, v, bias, **attrs)[0]
        assert not torch.allclose(ref, rs.reference(q, k, v, **attrs)[0])
        eager = torch.ops.attnx.relu_squared_attention(q, k, v, bias, **attrs)
        torch.testing.assert_close(eager.double(), ref, rtol=1e-4, atol=1e-4)
        (got,) = session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "bias": bias.numpy()})
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_bad_bias_is_a_clear_error():
    q = torch.zeros(2, 3, 4, 8)
    with pytest.raises(InputError, match=r"bias must be rank 4 .* \[2, 3, 4, 4\], got shape \(2, 3, 4, 5\)"):
        torch.ops.attnx.relu_squared_attention(q, q, q, torch.zeros(2, 3, 4, 5))
    with pytest.raises(InputError, match=r"bias must be rank 4 .*got shape \(4, 4\)"):
        torch.ops.attnx.relu_squared_attention(q, q, q, torch.zeros(4, 4))
    with pytest.raises(InputError, match="bias must have q's dtype torch.float32, got torch.float64"):
        torch.ops.attnx.relu_squared_attention(q, q, q, torch.zeros(1, 1, 4, 4, dtype=torch.float64))


def test_default_scale_is_one_over_root_d(rng):
    q, k, v = qkv(rng, 5, d=16)
    base = dict(causal=False, norm="none", fixed_length=1, norm_placement="outside")
    torch.testing.assert_close(rs.reference(q, k, v, scale=0.0, **base)[0], rs.reference(q, k, v, scale=0.25, **base)[0])


def test_norm_n_makes_early_rows_depend_on_the_total_length(rng):
    q, k, v = qkv(rng, 12)
    attrs = dict(causal=True, scale=0.0, fixed_length=1, norm_placement="outside")
    for norm, depends in (("n", True), ("visible", False)):
        short = rs.reference(q[:, :, :6], k[:, :, :6], v[:, :, :6], norm=norm, **attrs)[0]
        long = rs.reference(q, k, v, norm=norm, **attrs)[0][:, :, :6]
        assert (not torch.allclose(short, long)) == depends


def test_bad_attributes_and_inputs_are_clear_errors():
    with pytest.raises(AttributeValueError, match="'norm' = 'length' is not allowed; expected one of 'n', 'visible'"):
        rs.SPEC.resolve({"norm": "length"})
    with pytest.raises(AttributeValueError, match="'fixed_length' = 0 is not allowed"):
        rs.SPEC.resolve({"fixed_length": 0})
    with pytest.raises(InputError, match="keys must have the queries' length"):
        torch.ops.attnx.relu_squared_attention(torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 5, 8),
                                               torch.zeros(1, 1, 5, 8), causal=True)
