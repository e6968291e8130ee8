"""LinearAttention: reference vs the recurrent form, the fast eager path and the ONNX body vs reference.

Tolerances: float64 paths agree to 1e-10 (only summation order differs). The float32 paths
(eager chunked, ONNX body) are held to 1e-4 absolute on outputs of order 1: float32 rounds
at 6e-8 and the causal prefix sums run over up to 300 keys.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from attnx.errors import InputError
from attnx.models import LinearAttention
from attnx.ops import linear_attention as la
from attnx.ops import register_onnx_schemas

LENGTHS = (1, 37, 130)  # 1, and lengths that are not a multiple of the chunk (16)
COMBOS = [dict(causal=c, feature_map=f, normalize=n) for c in (False, True)
          for f in ("elu", "relu", "identity") for n in (True, False)]


def inputs(rng, n, m=None, d=8, e=6, feature_map="elu"):
    m = m or n
    q, k = torch.randn(2, 3, n, d, generator=rng), torch.randn(2, 3, m, d, generator=rng)
    v = torch.randn(2, 3, m, e, generator=rng)
    if feature_map == "identity":  # identity features must be positive for the normaliser to be safe
        q, k = q.abs(), k.abs()
    s0 = torch.rand(2, 3, d, e, generator=rng)
    z0 = torch.rand(2, 3, d, generator=rng) + 1
    return q, k, v, s0, z0


@pytest.mark.parametrize("attrs", COMBOS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("n", (1, 11))
def test_reference_equals_recurrent_form(attrs, n, rng):
    q, k, v, s0, z0 = inputs(rng, n, feature_map=attrs["feature_map"])
    for state in ((), (s0, z0)):
        ref = la.reference(q, k, v, *state, eps=1e-6, chunk_size=4, **attrs)
        expected = la.naive_recurrent_linear_attn(q, k, v, *state, eps=1e-6, **attrs)
        for got, want in zip(ref, expected):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_noncausal_reference_takes_more_keys_than_queries(rng):
    q, k, v, _, _ = inputs(rng, 5, m=9)
    y = la.reference(q, k, v, causal=False, feature_map="elu", normalize=True, eps=1e-6, chunk_size=4)[0]
    expected = la.naive_recurrent_linear_attn(q, k, v, causal=False, feature_map="elu", normalize=True, eps=1e-6)[0]
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attrs", COMBOS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("n", LENGTHS)
def test_chunked_eager_path_matches_reference(attrs, n, rng):
    q, k, v, s0, z0 = inputs(rng, n, feature_map=attrs["feature_map"])
    for state in ((), (s0, z0)):
        got = la.chunk_linear_attn(q, k, v, *state, eps=1e-6, chunk_size=16, **attrs)
        ref = la.reference(q, k, v, *state, eps=1e-6, chunk_size=16, **attrs)
        for g, r in zip(got, ref):
            torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("feature_map", ("elu", "relu"))
@pytest.mark.parametrize("normalize", (True, False))
def test_step_reproduces_causal_forward_token_by_token(feature_map, normalize, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    module = LinearAttention(32, 4, causal=True, feature_map=feature_map, normalize=normalize, chunk_size=8).eval()
    x = torch.randn(2, 21, 32, generator=rng)
    with torch.no_grad():
        full = module(x)
        state, steps = None, []
        for t in range(x.shape[1]):
            y, state = module.step(x[:, t], state)
            steps.append(y)
    assert state[0].dtype == torch.float32 and state[0].shape == (2, 4, 8, 8)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_step_refuses_noncausal():
    with pytest.raises(ValueError, match="non-causal"):
        LinearAttention(16, 2, causal=False).step(torch.zeros(1, 16))


@pytest.mark.parametrize("bad, message", [
    (dict(q=torch.zeros(2, 5, 8)), r"q must be rank 4 \[B, H, N, D\], got shape \(2, 5, 8\)"),
    (dict(k=torch.zeros(2, 3, 5, 8, dtype=torch.int64)), "k must be float32, float16, bfloat16 or float64"),
    (dict(v=torch.zeros(2, 3, 4, 6)), "shapes disagree"),
    (dict(state_s=torch.zeros(2, 3, 8, 6)), "state_s and state_z come together"),
])
def test_wrong_inputs_say_what_was_expected(bad, message):
    args = dict(q=torch.zeros(2, 3, 5, 8), k=torch.zeros(2, 3, 5, 8), v=torch.zeros(2, 3, 5, 6))
    args.update(bad)
    with pytest.raises(InputError, match=message):
        torch.ops.attnx.linear_attention(**args)


def test_causal_needs_as_many_keys_as_queries():
    with pytest.raises(InputError, match="causal needs as many keys as queries, got N=5, M=7"):
        torch.ops.attnx.linear_attention(torch.zeros(1, 1, 5, 4), torch.zeros(1, 1, 7, 4),
                                         torch.zeros(1, 1, 7, 4), causal=True)


def _one_node_model(attrs, n_in, n_out, dtype=onnx.TensorProto.FLOAT):
    spec = la.SPEC
    resolved = spec.resolve(attrs)
    names_in = ["q", "k", "v", "state_s", "state_z"][:n_in]
    names_out = ["y", "state_s_out", "state_z_out"][:n_out]
    node = helper.make_node("LinearAttention", names_in, names_out, domain="attnx",
                            overload=spec.overload(resolved, n_in, n_out),
                            **{a.name: a.to_onnx(resolved[a.name]) for a in spec.attributes})
    types = [dtype] * 3 + [onnx.TensorProto.FLOAT] * 2
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(x, t, [f"{x}_{i}" for i in range(r)])
         for x, t, r in zip(names_in, types, (4, 4, 4, 4, 3))],
        [helper.make_tensor_value_info(x, t, [f"{x}_{i}" for i in range(r)])
         for x, t, r in zip(names_out, [dtype] + types[3:], (4, 4, 3))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("attnx", 1)],
                              functions=[spec.function_body(resolved, n_in, n_out, 18)], ir_version=10)
    register_onnx_schemas()
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("attrs", COMBOS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("with_state", (False, True))
def test_onnx_function_body_matches_reference(attrs, with_state, rng):
    attrs = dict(attrs, chunk_size=16, eps=1e-6)
    n_in, n_out = (5, 3) if with_state else (3, 1)
    session = _one_node_model(attrs, n_in, n_out)
    for n in (1, 37, 300):
        q, k, v, s0, z0 = inputs(rng, n, feature_map=attrs["feature_map"])
        feed = dict(zip(["q", "k", "v", "state_s", "state_z"], (x.numpy() for x in (q, k, v, s0, z0))))
        got = session.run(None, {name: feed[name] for name in list(feed)[:n_in]})
        ref = la.reference(q, k, v, *((s0, z0) if with_state else ()), **attrs)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r.numpy(), rtol=1e-4, atol=1e-4)


def test_onnx_function_body_in_float16_accumulates_in_float32(rng):
    attrs = dict(causal=True, feature_map="elu", normalize=True, chunk_size=16, eps=1e-6)
    session = _one_node_model(attrs, 3, 1, dtype=onnx.TensorProto.FLOAT16)
    q, k, v, _, _ = inputs(rng, 300)
    (y,) = session.run(None, {"q": q.half().numpy(), "k": k.half().numpy(), "v": v.half().numpy()})
    assert y.dtype == np.float16
    ref = la.reference(q.half(), k.half(), v.half(), **attrs)[0].numpy()
    # inputs already rounded to fp16; what remains is one rounding of the output (4.9e-4 relative)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=2e-3, atol=2e-3)
