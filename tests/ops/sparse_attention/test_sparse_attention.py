"""SparseAttention: the mask against the patterns' text (spelled out key by key), the eager path and
the ONNX body against the float64 reference, and causal rows against prefix runs (no N×N tensor in
the exported graphs: tests/check/test_zoo_parity.py).

Tolerances: float64 paths agree to 1e-10 (summation order only). The float32 paths (eager,
ONNX body) are held to 1e-5 absolute: outputs are convex combinations of values of order 1
(|y| ≤ max |v|), softmax over at most a few hundred keys in float32 (6e-8 relative per
operation) lands near 1e-7 (measured 5e-7), while a key wrongly in or out of the set moves a
row by its attention weight, 1e-2 or more.
"""

import numpy as np
import pytest
import torch

from attnx.errors import AttributeValueError, InputError
from attnx.ops import sparse_attention as sa
from helpers.onnx_node import one_node_session

# windows, dilations, strides and blocks chosen so no length below is a multiple of any of them
CASES = [dict(pattern=p, causal=c, window=3, dilation=2, stride=5, block=7)
         for p in sa.PATTERNS for c in (False, True)]
# blocks beside their neighbours (local-attention's buckets): look_back a, look_ahead c tiles
CASES += [dict(pattern="block", causal=c, window=3, dilation=2, stride=5, block=4, look_back=a, look_ahead=b)
          for c in (False, True) for a, b in ((1, 0), (0, 1), (2, 1))]
LENGTHS = (1, 13, 37, 130)


def case_id(attrs):
    around = f"-{attrs['look_back']}-{attrs['look_ahead']}" if "look_back" in attrs else ""
    return f"{attrs['pattern']}{around}-{'causal' if attrs['causal'] else 'full'}"


def qkv(rng, n, d=8, e=6):
    return (torch.randn(2, 3, n, d, generator=rng), torch.randn(2, 3, n, d, generator=rng),
            torch.randn(2, 3, n, e, generator=rng))


@pytest.mark.parametrize("attrs", CASES, ids=case_id)
@pytest.mark.parametrize("n", (1, 23))
def test_reference_equals_naive_loop(attrs, n, rng):
    assert all(i in sa.allowed_keys(i, n, **attrs) for i in range(n))  # no row is empty
    q, k, v = qkv(rng, n)
    for scale in (0.0, 0.3):
        expected = sa.naive_rowwise_sparse_attn(q, k, v, scale=scale, **attrs)
        torch.testing.assert_close(sa.reference(q, k, v, scale=scale, **attrs)[0], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attrs", CASES, ids=case_id)
@pytest.mark.parametrize("n", LENGTHS)
def test_eager_path_matches_reference(attrs, n, rng):
    q, k, v = qkv(rng, n)
    attrs = sa.SPEC.resolve(attrs)
    ref = sa.reference(q, k, v, **attrs)[0]
    torch.testing.assert_close(sa.window_sparse_attn(q, k, v, **attrs).double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sa.window_sparse_attn(q.double(), k.double(), v.double(), **attrs), ref,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attrs", CASES, ids=case_id)
def test_onnx_function_body_matches_reference(attrs, rng):
    attrs = sa.SPEC.resolve(dict(attrs, scale=0.25))
    session = one_node_session("SparseAttention", attrs, {"q": 4, "k": 4, "v": 4})
    for n in LENGTHS:
        q, k, v = qkv(rng, n)
        (y,) = session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})
        np.testing.assert_allclose(y, sa.reference(q, k, v, **attrs)[0].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [a for a in CASES if a["causal"]], ids=case_id)
def test_causal_rows_equal_runs_on_each_prefix(attrs, rng):
    """Row i of a causal run equals the last row of a run on positions 0..i alone."""
    attrs = sa.SPEC.resolve(attrs)
    q, k, v = qkv(rng, 17)
    full = sa.window_sparse_attn(q.double(), k.double(), v.double(), **attrs)
    for i in range(17):
        prefix = sa.window_sparse_attn(*(x[:, :, :i + 1].double() for x in (q, k, v)), **attrs)
        torch.testing.assert_close(prefix[:, :, -1], full[:, :, i], rtol=1e-12, atol=1e-12)


def test_each_neighbouring_tile_changes_the_result(rng):
    """look_back and look_ahead must matter, each tile of them (the cases above would pass for any mask)."""
    q, k, v = qkv(rng, 37)
    ys = [sa.reference(q, k, v, **sa.SPEC.resolve(dict(pattern="block", block=4, look_back=a, look_ahead=b)))[0]
          for a, b in ((0, 0), (1, 0), (2, 0), (1, 1))]
    assert all((x - y).abs().max() > 1e-2 for i, x in enumerate(ys) for y in ys[i + 1:])


def test_a_wider_window_changes_the_result(rng):
    """The test above would pass for any mask; the window must matter."""
    q, k, v = qkv(rng, 40)
    narrow = sa.reference(q, k, v, **sa.SPEC.resolve(dict(window=2)))[0]
    wide = sa.reference(q, k, v, **sa.SPEC.resolve(dict(window=3)))[0]
    assert (narrow - wide).abs().max() > 1e-2


@pytest.mark.parametrize("bad, message", [
    (dict(q=torch.zeros(2, 5, 8)), r"q must be rank 4 \[B, H, N, D\], got shape \(2, 5, 8\)"),
    (dict(k=torch.zeros(2, 3, 7, 8), v=torch.zeros(2, 3, 7, 6)), "keys must have the queries' length, got N=5, M=7"),
    (dict(v=torch.zeros(2, 3, 5, 6, dtype=torch.float16)), "q, k, v must share a dtype"),
])
def test_wrong_inputs_say_what_was_expected(bad, message):
    args = dict(q=torch.zeros(2, 3, 5, 8), k=torch.zeros(2, 3, 5, 8), v=torch.zeros(2, 3, 5, 6))
    args.update(bad)
    with pytest.raises(InputError, match=message):
        torch.ops.attnx.sparse_attention(**args)


@pytest.mark.parametrize("attrs, message", [
    (dict(pattern="random"), "'pattern' = 'random' is not allowed; expected one of 'local', 'dilated'"),
    (dict(window=0), "'window' = 0 is not allowed; expected int >= 1"),
    (dict(scale=-1.0), "'scale' = -1.0 is not allowed; expected float >= 0"),
])
def test_bad_attributes_say_what_is_allowed(attrs, message):
    with pytest.raises(AttributeValueError, match=message):
        torch.ops.attnx.sparse_attention(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4),
                                         **attrs)

