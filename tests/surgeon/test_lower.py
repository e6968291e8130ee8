"""Lowering standard Attention / RotaryEmbedding for TensorRT parsers that lack them, and the version table.

Outputs are compared in ONNX Runtime, lowered file against the original (ONNX Runtime's own Attention and
RotaryEmbedding kernels), in float32 at lengths 1, 37 and 300 and batch 1 and 2: the lowering reorders the
scale (applied to Q once instead of √s to Q and to K) and the rotation's products, which moves float32
results by a few ulps (~1e-7 relative); a wrong mask, scale, head grouping or rotated half moves them by
1e-2 or more. 1e-5 relative (with 1e-6 absolute for values near 0) separates the two.
"""

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from attnx.errors import OnnxFileError
from attnx.surgeon import trt_versions
from attnx.surgeon.lower import lower_standard_ops
from attnx.surgeon.retarget import retarget

RTOL, ATOL = 1e-5, 1e-6
LENGTHS, BATCHES = (1, 37, 300), (1, 2)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "surgeon.md"
F, B = TensorProto.FLOAT, TensorProto.BOOL


@pytest.fixture
def nrng(rng):
    """numpy draws seeded from the session's printed torch seed"""
    return np.random.default_rng(rng.initial_seed())


def _vi(name, elem, shape):
    if shape is None:  # an output of unknown shape
        return helper.make_value_info(name, helper.make_tensor_type_proto(elem, None))
    return helper.make_tensor_value_info(name, elem, shape)


def _model(node, inputs, outputs, initializers=()):
    graph = helper.make_graph([node], "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def _attention(rank=4, hq=4, hkv=4, d=8, mask=None, past=False, **attrs):
    if rank == 4:
        q, k, v = ("b", hq, "s", d), ("b", hkv, "l", d), ("b", hkv, "l", d)
    else:
        q, k, v = ("b", "s", hq * d), ("b", "l", hkv * d), ("b", "l", hkv * d)
    inputs = [_vi("q", F, q), _vi("k", F, k), _vi("v", F, v)]
    names, outs = ["q", "k", "v", ""], ["y"]
    if mask is not None:
        inputs.append(_vi("mask", mask, ["s", "t"]))
        names[3] = "mask"
    if past:
        inputs += [_vi("past_k", F, ["b", hkv, "p", d]), _vi("past_v", F, ["b", hkv, "p", d])]
        names += ["past_k", "past_v"]
        outs += ["present_k", "present_v"]
    node = helper.make_node("Attention", names if names[-1] else names[:3], outs, **attrs)
    shapes = {"y": q if rank == 4 or hq == hkv else ("b", "s", hq * d), "present_k": ("b", hkv, "pl", d),
              "present_v": ("b", hkv, "pl", d)}
    return _model(node, inputs, [_vi(o, F, shapes[o]) for o in outs])


def _feeds(model, n, batch, rng, past_len=5):
    feeds = {}
    for inp in model.graph.input:
        dims = []
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(d.dim_value)
            else:
                dims.append({"b": batch, "s": n, "l": n, "p": past_len}.get(d.dim_param, None))
        if inp.name == "mask":
            dims = [n, n + (past_len if any(i.name == "past_k" for i in model.graph.input) else 0)]
        if inp.type.tensor_type.elem_type == B:
            m = rng.random(dims) < 0.7
            m[:, 0] = True  # every row keeps a key (a fully masked row is the spec's 0, the lowering's NaN)
            feeds[inp.name] = m
        elif inp.type.tensor_type.elem_type == TensorProto.INT64:
            feeds[inp.name] = rng.integers(0, 400, size=dims).astype(np.int64)
        elif inp.name == "mask":
            feeds[inp.name] = (rng.standard_normal(dims) * 2).astype(np.float32)
        else:
            feeds[inp.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _ops(model):
    return {n.op_type for n in model.graph.node}


def _assert_lowered_same(model, rng, lengths=LENGTHS):
    lowered, counts = lower_standard_ops(model, lambda op, outputs: True)
    assert counts and not _ops(lowered) & {"Attention", "RotaryEmbedding"}, _ops(lowered)
    onnx.checker.check_model(lowered)
    for n in lengths:
        for batch in BATCHES:
            feeds = _feeds(model, n, batch, rng)
            for want, got in zip(_run(model, feeds), _run(lowered, feeds)):
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"n {n}, batch {batch}")


ATTENTION_CASES = {
    "plain": {},
    "causal": {"is_causal": 1},
    "float-mask": {"mask": F},
    "bool-mask-causal": {"mask": B, "is_causal": 1},
    "gqa-scale-softcap": {"hq": 4, "hkv": 2, "scale": 0.3, "softcap": 5.0},
    "3d-gqa-causal": {"rank": 3, "hq": 4, "hkv": 1, "is_causal": 1, "q_num_heads": 4, "kv_num_heads": 1},
    "past-causal": {"past": True, "is_causal": 1},
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_lowers_to_primitives_with_the_same_outputs(case, nrng):
    _assert_lowered_same(_attention(**ATTENTION_CASES[case]), nrng)


def _rotary(rank=4, interleaved=0, rd=0, positions=True, h=2, d=16):
    half = (rd or d) // 2
    x = ["b", h, "s", d] if rank == 4 else ["b", "s", h * d]
    inputs = [_vi("x", F, x)]
    if positions:
        table = np.random.default_rng(1).standard_normal((400, half)).astype(np.float32)
        inits = [onnx.numpy_helper.from_array(table, "cos"), onnx.numpy_helper.from_array(table[::-1].copy(), "sin")]
        inputs.append(_vi("pos", TensorProto.INT64, ["b", "s"]))
        names = ["x", "cos", "sin", "pos"]
    else:
        inits = []
        inputs += [_vi("cos", F, ["b", "s", half]), _vi("sin", F, ["b", "s", half])]
        names = ["x", "cos", "sin"]
    attrs = {"interleaved": interleaved}
    if rd:
        attrs["rotary_embedding_dim"] = rd
    if rank == 3:
        attrs["num_heads"] = h
    node = helper.make_node("RotaryEmbedding", names, ["y"], **attrs)
    return _model(node, inputs, [_vi("y", F, x)], inits)


ROTARY_CASES = {
    "halves": {},
    "interleaved": {"interleaved": 1},
    "partial": {"rd": 8},
    "partial-interleaved-3d": {"rank": 3, "interleaved": 1, "rd": 8},
    "caches-without-positions": {"positions": False},
}


@pytest.mark.parametrize("case", list(ROTARY_CASES))
def test_rotary_embedding_lowers_to_primitives_with_the_same_outputs(case, nrng):
    _assert_lowered_same(_rotary(**ROTARY_CASES[case]), nrng)


def test_sdpa_exported_by_torch_lowers(nrng):
    """A third-party file: torch.onnx.export(dynamo=True) of F.scaled_dot_product_attention at opset 23,
    causal, with a float mask, and grouped-query (kv heads 2 of 4)."""
    torch = pytest.importorskip("torch")
    F_ = torch.nn.functional

    class Sdpa(torch.nn.Module):
        def forward(self, q, k, v, mask):
            causal = F_.scaled_dot_product_attention(q, k, v, is_causal=True)
            masked = F_.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return causal, masked

    class Gqa(torch.nn.Module):
        def forward(self, q, k, v):
            return F_.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    seq = torch.export.Dim("seq", min=2)
    import warnings, logging
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    q, k, m = torch.randn(2, 4, 16, 8), torch.randn(2, 4, 16, 8), torch.randn(16, 16)
    k2 = torch.randn(2, 2, 16, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdpa = torch.onnx.export(Sdpa(), (q, k, k, m), dynamo=True, opset_version=23, input_names=["q", "k", "v", "mask"],
                                 dynamic_shapes=({2: seq}, {2: seq}, {2: seq}, {0: seq, 1: seq})).model_proto
        gqa = torch.onnx.export(Gqa(), (q, k2, k2), dynamo=True, opset_version=23, input_names=["q", "k", "v"],
                                dynamic_shapes=({2: seq}, {2: seq}, {2: seq})).model_proto
    for model in (sdpa, gqa):
        assert "Attention" in _ops(model), _ops(model)
        lowered, _ = lower_standard_ops(model, lambda op, outputs: True)
        assert "Attention" not in _ops(lowered)
        for n in (2, 37):
            feeds = {i.name: nrng.standard_normal([d.dim_value or n for d in i.type.tensor_type.shape.dim])
                     .astype(np.float32) for i in model.graph.input}
            for want, got in zip(_run(model, feeds), _run(lowered, feeds)):
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_what_each_target_and_version_keeps():
    both = _model_with_both()
    assert not _ops(retarget(both, "trt", (10, 3))) & {"Attention", "RotaryEmbedding"}
    assert _ops(retarget(both, "trt", (10, 14))) & {"Attention", "RotaryEmbedding"} == {"Attention"}
    assert _ops(retarget(both, "trt", (10, 15))) >= {"Attention", "RotaryEmbedding"}
    assert not _ops(retarget(both, "ort-trt")) & {"Attention", "RotaryEmbedding"}
    assert _ops(retarget(both, "ort")) >= {"Attention", "RotaryEmbedding"}
    # TensorRT's importer takes an Attention with one output only: present key/value outputs lower it
    assert "Attention" not in _ops(retarget(_attention(past=True), "trt", (10, 16)))


def _model_with_both():
    rot = _rotary()
    nodes = list(rot.graph.node) + [helper.make_node("Attention", ["y", "y", "y"], ["z"], is_causal=1)]
    graph = helper.make_graph(nodes, "g", list(rot.graph.input), [_vi("z", F, ["b", 2, "s", 16])],
                              list(rot.graph.initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    return model


def test_version_parsing_says_what_is_supported():
    assert trt_versions.parse_version("10.3") == (10, 3) and trt_versions.parse_version("10.15.1.29") == (10, 15)
    with pytest.raises(ValueError, match=r"expected a TensorRT version X\.Y such as 10\.3, found 'ten'"):
        trt_versions.parse_version("ten")
    with pytest.raises(ValueError, match=r"TensorRT 8\.6 is not supported: attnx supports TensorRT 10\.3 or later"):
        trt_versions.parse_version("8.6")


def test_unloweable_attention_is_refused_saying_why():
    node = helper.make_node("Attention", ["q", "k", "v"], ["y", "", "", "qk"])
    model = _model(node, [_vi(n, F, ["b", 2, "s", 8]) for n in "qkv"],
                   [_vi("y", F, ["b", 2, "s", 8]), _vi("qk", F, ["b", 2, "s", "s"])])
    with pytest.raises(OnnxFileError, match="qk_matmul_output output is read"):
        lower_standard_ops(model, lambda op, outputs: True)


def test_docs_forms_table_is_the_modules():
    text = DOCS.read_text(encoding="utf-8")
    header = "| " + " | ".join(trt_versions.FORMS_HEADER) + " |"
    assert header in text, "docs/surgeon.md lacks the forms table"
    lines = text[text.index(header):].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append(tuple(c.strip().strip("`") for c in line.strip("|").split("|")))
    assert rows == trt_versions.forms_table()
