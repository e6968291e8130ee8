"""MixedChunkAttention (FLASH): the dense reference against its chunk-by-chunk form and its recurrent
step, the eager path and the ONNX body against the reference, causal rows against prefix runs.

Tolerances: float64 paths agree to 1e-10. The float32 paths are held to 1e-5 absolute and
relative: relu² of scores of order 1 times values of order 1, summed over one chunk (≤ 16
keys) and a prefix of chunk states, in float32 (6e-8 relative per operation; measured 1e-6
on outputs of order 10), while a chunk boundary off by one moves outputs by 1e-1.
"""

import numpy as np
import pytest
import torch

from attnx.errors import AttributeValueError, InputError
from attnx.ops import mixed_chunk_attention as mc
from helpers.onnx_node import one_node_session

NAMES = ["quad_q", "quad_k", "lin_q", "lin_k", "v"]
LENGTHS = (1, 13, 37, 130)  # chunk 16: none is a multiple
CASES = [dict(causal=c, chunk_size=16, quad_scale=qs, lin_scale=ls)
         for c in (False, True) for qs, ls in ((0.0, 0.0), (0.3, 0.05))]


def case_id(a):
    return f"{'causal' if a['causal'] else 'full'}-{'default' if not a['quad_scale'] else 'scaled'}"


def inputs(rng, n, s=8, e=6):
    return [torch.randn(2, 2, n, s if i < 4 else e, generator=rng) for i in range(5)]


@pytest.mark.parametrize("attrs", CASES, ids=case_id)
@pytest.mark.parametrize("n", (1, 16, 37))
def test_reference_equals_chunk_by_chunk_loop(attrs, n, rng):
    xs = inputs(rng, n)
    torch.testing.assert_close(mc.reference(*xs, **attrs)[0], mc.naive_chunkwise_mixed_chunk_attn(*xs, **attrs),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attrs", [a for a in CASES if a["causal"]], ids=case_id)
def test_recurrent_steps_reproduce_the_causal_reference_token_by_token(attrs, rng):
    """The decoder's step: the state over finished chunks and the current chunk's cache, token by token."""
    xs = [x.double() for x in inputs(rng, 37)]
    qq, qk, lq, lk, v = xs
    state = (torch.zeros(2, 2, 8, 6, dtype=torch.float64), *(x[:, :, :0] for x in (qk, lk, v)))
    steps = []
    for t in range(37):
        y, state = mc.recurrent_step(*(x[:, :, t:t + 1] for x in xs), state, chunk_size=attrs["chunk_size"],
                                     quad_scale=attrs["quad_scale"], lin_scale=attrs["lin_scale"])
        steps.append(y)
        assert state[1].shape[2] == (t + 1) % attrs["chunk_size"]
    torch.testing.assert_close(torch.cat(steps, 2), mc.reference(*xs, **attrs)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attrs", CASES, ids=case_id)
@pytest.mark.parametrize("n", LENGTHS)
def test_eager_path_matches_reference(attrs, n, rng):
    xs = inputs(rng, n)
    ref = mc.reference(*xs, **attrs)[0]
    torch.testing.assert_close(mc.chunk_mixed_attn(*xs, **attrs).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", CASES, ids=case_id)
def test_onnx_function_body_matches_reference(attrs, rng):
    session = one_node_session("MixedChunkAttention", attrs, {name: 4 for name in NAMES})
    for n in LENGTHS:
        xs = inputs(rng, n)
        (y,) = session.run(None, dict(zip(NAMES, (x.numpy() for x in xs))))
        np.testing.assert_allclose(y, mc.reference(*xs, **attrs)[0].numpy(), rtol=1e-5, atol=1e-5)


def test_causal_rows_equal_runs_on_each_prefix(rng):
    """Causal FLASH as an RNN: row i needs only the state over finished chunks and its own chunk so far."""
    attrs = mc.SPEC.resolve(dict(causal=True, chunk_size=4))
    xs = [x.double() for x in inputs(rng, 14)]
    full = mc.chunk_mixed_attn(*xs, **attrs)
    for i in range(14):
        prefix = mc.chunk_mixed_attn(*(x[:, :, :i + 1] for x in xs), **attrs)
        torch.testing.assert_close(prefix[:, :, -1], full[:, :, i], rtol=1e-12, atol=1e-12)


def test_noncausal_linear_part_divides_by_the_sequence_length(rng):
    """Default s_l is 1/N over all positions: with the quadratic part silenced (q ≥ 0, k = −1, so
    relu(q·k) = 0) the output is q'(k'ᵀv) / N."""
    xs = inputs(rng, 10)
    xs[0], xs[1] = xs[0].abs(), -torch.ones_like(xs[1])
    y = mc.reference(*xs, causal=False, chunk_size=4, quad_scale=0.0, lin_scale=0.0)[0]
    lq, lk, v = (x.double() for x in xs[2:])
    torch.testing.assert_close(y, lq @ (lk.transpose(-1, -2) @ v) / 10, rtol=1e-10, atol=1e-10)


def test_wrong_inputs_say_what_was_expected():
    xs = [torch.zeros(1, 1, 5, 4) for _ in range(5)]
    with pytest.raises(InputError, match=r"lin_k must match quad_q \(1, 1, 5, 4\)"):
        torch.ops.attnx.mixed_chunk_attention(*xs[:3], torch.zeros(1, 1, 6, 4), xs[4])
    with pytest.raises(InputError, match="keys must have the queries' length, got N=5, M=6"):
        torch.ops.attnx.mixed_chunk_attention(xs[0], torch.zeros(1, 1, 6, 4), xs[2], xs[3], torch.zeros(1, 1, 6, 4))


def test_bad_chunk_size_says_what_is_allowed():
    xs = [torch.zeros(1, 1, 5, 4) for _ in range(5)]
    with pytest.raises(AttributeValueError, match="'chunk_size' = 0 is not allowed; expected int >= 1"):
        torch.ops.attnx.mixed_chunk_attention(*xs, chunk_size=0)


# the in-chunk bias [B|1, H|1, g|1, g|1]: full, broadcast over batch and heads, a row or column broadcast
BIAS_SHAPES = [(2, 2, 16, 16), (1, 1, 16, 16), (1, 2, 1, 16), (2, 1, 16, 1)]


@pytest.mark.parametrize("causal", (False, True), ids=("full", "causal"))
@pytest.mark.parametrize("bias_shape", BIAS_SHAPES, ids=str)
def test_in_chunk_bias_every_path_matches_the_reference(causal, bias_shape, rng):
    """The same bias in every chunk, read at the positions inside it: the chunk-by-chunk loop, the eager
    path and the ONNX body against the dense reference, at lengths that leave a short last chunk (and 1)."""
    attrs = dict(causal=causal, chunk_size=16, quad_scale=0.3, lin_scale=0.0)
    session = one_node_session("MixedChunkAttention", attrs, {**{name: 4 for name in NAMES}, "bias": 4})
    for n in LENGTHS:
        xs = inputs(rng, n)
        bias = torch.randn(*bias_shape, generator=rng)
        ref = mc.reference(*xs, bias, **attrs)[0]
        torch.testing.assert_close(mc.naive_chunkwise_mixed_chunk_attn(*xs, bias, **attrs), ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(torch.ops.attnx.mixed_chunk_attention(*xs, bias, **attrs).double(), ref,
                                   rtol=1e-5, atol=1e-5)
        (y,) = session.run(None, dict(zip([*NAMES, "bias"], (x.numpy() for x in (*xs, bias)))))
        np.testing.assert_allclose(y, ref.numpy(), rtol=1e-5, atol=1e-5)


def test_in_chunk_bias_is_read_at_positions_inside_the_chunk(rng):
    """A bias that is +1 only at (1, 0) inside the chunk, with the scores silenced (quad_q = 0): row i gets
    relu(1)²·v_{i-1} exactly where i is the second position of its chunk, and nothing elsewhere."""
    xs = inputs(rng, 13)
    xs[0] = torch.zeros_like(xs[0])
    xs[2] = torch.zeros_like(xs[2])  # no linear part
    bias = torch.zeros(1, 1, 4, 4)
    bias[0, 0, 1, 0] = 1.0
    y = mc.reference(*xs, bias, causal=False, chunk_size=4, quad_scale=0.0, lin_scale=0.0)[0]
    v = xs[4].double()
    want = torch.zeros_like(y)
    for i in (1, 5, 9):
        want[:, :, i] = v[:, :, i - 1]
    torch.testing.assert_close(y, want, rtol=0, atol=1e-12)


def test_recurrent_steps_with_an_in_chunk_bias_reproduce_the_causal_reference(rng):
    attrs = dict(causal=True, chunk_size=16, quad_scale=0.3, lin_scale=0.0)
    xs = [x.double() for x in inputs(rng, 37)]
    bias = torch.randn(1, 2, 16, 16, generator=rng, dtype=torch.float64)
    qq, qk, lq, lk, v = xs
    state = (torch.zeros(2, 2, 8, 6, dtype=torch.float64), *(x[:, :, :0] for x in (qk, lk, v)))
    steps = []
    for t in range(37):
        y, state = mc.recurrent_step(*(x[:, :, t:t + 1] for x in xs), state, bias, chunk_size=16, quad_scale=0.3,
                                     lin_scale=0.0)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 2), mc.reference(*xs, bias, **attrs)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape, words", [((1, 1, 4, 4), r"\[B, H, g, g\] = \[1, 1, 16, 16\]"),
                                          ((1, 16, 16), "rank 4")])
def test_a_bias_of_the_wrong_shape_says_what_was_expected(shape, words):
    xs = [torch.zeros(1, 1, 5, 4) for _ in range(5)]
    with pytest.raises(InputError, match=words):
        torch.ops.attnx.mixed_chunk_attention(*xs, torch.zeros(shape), chunk_size=16)
