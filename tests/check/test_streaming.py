"""Prefill then decode equals the full model, in eager float64 and in ONNX Runtime.

Tolerances: the float64 stream only reorders sums, so it is held to 1e-9; the ONNX Runtime
stream runs the fp32 files and is held to the fp32 parity tolerance (atol 1e-4, rtol 1e-3).
"""

import numpy as np
import onnx
import pytest
import torch

from attnx.check.stream import check_stream, stream_eager
from attnx.cli.main import main
from attnx.errors import BackendUnavailableError, InputError, ModelNotFoundError, OnnxFileError
from attnx.exporters import attach_local_functions
from attnx.exporters.stream import export_stream, stream_paths
from attnx.generate import generate
from attnx.models import ZOO, load_model
from attnx.models.gau import GAU
from attnx.models.streaming import Decode, Prefill, streamable
from attnx.models.tiny_lm import TinyLM
from attnx.models.zoo import LoadedModel



def _causal_lm(name: str) -> bool:
    module = ZOO[name].create()
    return isinstance(module, TinyLM) and all(block.attention.causal for block in module.blocks)


CAUSAL = [name for name in ZOO if _causal_lm(name)]
# relu²/n divides every row by the total length: no prefix state can reproduce it
NOT_STREAMABLE = {"gau-n-tiny": "the rows depend on the total length",
                  "gau-n-trained": "the rows depend on the total length"}
# one trained entry stands for all: the others share the -tiny entries' graphs, with other weights
CAUSAL_LMS = [name for name in CAUSAL if name not in NOT_STREAMABLE
              and (not name.endswith("-trained") or name == "linear-trained")]


@pytest.fixture(scope="session")
def stream_files(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = export_stream(load_model(name), tmp_path_factory.mktemp("stream") / f"{name}.onnx", "both")
        return cache[name]

    return get


# 13 + 4 steps fills local-tiny's 15-position window cache and reaches strided-tiny's stride 16;
# 63 + 4 crosses the 64-token chunk of linear and Performer, FLASH's 32-token chunk (its state
# takes a finished chunk) and DiagAttention's 32-token block.
PROMPT_LENS = (1, 13, 37, 63)


def test_every_causal_zoo_language_model_streams_but_those_refused_for_a_reason():
    assert set(NOT_STREAMABLE) <= set(CAUSAL)
    assert {"softmax-tiny", "linear-tiny", "performer-tiny", "gau-tiny", "flash-tiny", "local-tiny",
            "transnormer-tiny"} <= set(CAUSAL_LMS)
    for name, reason in NOT_STREAMABLE.items():
        with pytest.raises(ModelNotFoundError, match=f"{name}: block 0's GAU cannot stream: .*{reason}"):
            streamable(load_model(name))


@pytest.mark.parametrize("norm, streams", [("n", False), ("visible", True), ("fixed", True), ("none", True)])
def test_gau_streams_unless_its_norm_is_the_total_length(norm, streams):
    gau = GAU(32, qk_dim=8, attention="relu2", causal=True, norm=norm, fixed_length=16)
    assert (gau.why_not_streamable is None) == streams
    if not streams:
        assert "depend on the total length" in gau.why_not_streamable
        with pytest.raises(ValueError, match="GAU.decode: relu²/n divides every row by the total length"):
            gau.decode(torch.zeros(1, 1, 32), (torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 3, 64)))


@pytest.mark.parametrize("name", CAUSAL_LMS)
@pytest.mark.parametrize("prompt_len", PROMPT_LENS)
def test_eager_stream_equals_full_model_at_every_position(name, prompt_len, rng):
    lm = load_model(name).module.double()
    ids = torch.randint(0, lm.vocab_size, (2, prompt_len + 4), generator=rng)
    with torch.no_grad():
        full = lm(ids).numpy()
    np.testing.assert_allclose(stream_eager(lm, ids, prompt_len), full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", CAUSAL_LMS)
def test_onnxruntime_stream_passes_for_every_causal_zoo_model(name, stream_files):
    paths = stream_files(name)
    eager, onnxrt = check_stream(load_model(name), paths["prefill"], paths["decode"], prompt_lens=PROMPT_LENS,
                                 new_tokens=4)
    assert eager.passed, eager.to_text()
    assert onnxrt.passed, onnxrt.to_text()
    assert [o.seq_len for o in onnxrt.outputs[:5]] == [1, 2, 3, 4, 5]  # the prompt, then every position


def test_local_cache_keeps_only_the_window_and_flash_moves_finished_chunks_into_its_state(rng):
    ids = torch.randint(0, 256, (1, 40), generator=rng)
    local, flash = (load_model(name).module for name in ("local-tiny", "flash-tiny"))
    with torch.no_grad():
        key = Prefill(local)(ids)[1]
        assert key.shape[2] == 15  # window 16: the next token is the 16th key
        assert Decode(local)(ids[:, :1], *Prefill(local)(ids)[1:])[1].shape[2] == 15
        _, state, quad_key, _, _ = Prefill(flash)(ids[:, :32])[:5]
        assert quad_key.shape[2] == 0 and state.abs().sum() > 0  # chunk 32 finished: all in the state
        assert Prefill(flash)(ids)[2].shape[2] == 8  # 40 = 32 + 8 in the current chunk


def test_linear_decode_graph_carries_the_state_through_linear_attention(stream_files):
    decode = onnx.load(stream_files("linear-tiny")["decode"])
    nodes = [n for n in decode.graph.node if n.domain == "attnx"]
    assert len(nodes) == 2 and all(len(n.input) == 5 and len(n.output) == 3 for n in nodes)
    names = [i.name for i in decode.graph.input]
    assert names == ["input_ids", "past.0.state_s", "past.0.state_z", "past.1.state_s", "past.1.state_z"]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in decode.graph.input[1:])


def test_softmax_decode_cache_is_onnx_attentions_own_past_and_present(stream_files):
    decode = onnx.load(stream_files("softmax-tiny")["decode"])
    attention = [n for n in decode.graph.node if n.op_type == "Attention"]
    assert len(attention) == 2 and not [n for n in decode.graph.node if n.op_type == "Concat"]
    assert list(attention[0].input[4:]) == ["past.0.key", "past.0.value"]
    assert list(attention[0].output[1:]) == ["present.0.key", "present.0.value"]
    past = decode.graph.input[1].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in past] == ["batch", 4, "past", 16]


def test_a_broken_decode_graph_fails_the_stream_check(stream_files, tmp_path):
    paths = stream_files("linear-tiny")
    model = onnx.load(paths["decode"])
    for node in model.graph.node:
        if node.domain == "attnx":
            for a in node.attribute:
                if a.name == "eps":
                    a.f = 1.0  # a wrong denominator: only decode steps can see it
    stale = tmp_path / "stale.decode.onnx"
    onnx.save(model, stale)
    with pytest.raises(OnnxFileError, match="names function overload .* but its attributes .* call for"):
        check_stream(load_model("linear-tiny"), paths["prefill"], stale)
    bad = tmp_path / "bad.decode.onnx"
    onnx.save(attach_local_functions(model), bad)
    _, onnxrt = check_stream(load_model("linear-tiny"), paths["prefill"], bad, prompt_lens=(5,), new_tokens=2)
    assert [o.passed for o in onnxrt.outputs] == [True, False, False]


def test_prefill_and_decode_of_different_models_are_refused(stream_files):
    with pytest.raises(InputError, match="not a prefill/decode pair"):
        check_stream(load_model("linear-tiny"), stream_files("linear-tiny")["prefill"],
                     stream_files("softmax-tiny")["decode"])


def test_non_causal_or_non_lm_models_have_no_stream():
    from attnx.models import LinearAttention

    with pytest.raises(ModelNotFoundError, match="streaming needs a zoo language model"):
        export_stream(LoadedModel("x", LinearAttention(16, 2), (torch.zeros(2, 4, 16),)), "x.onnx", "both")


def test_generate_reports_tokens_latency_and_a_constant_linear_state(tmp_path):
    result = generate(load_model("linear-tiny"), tmp_path, prompt_len=5, new_tokens=6)
    assert len(result.tokens) == 6 and len(result.decode_ms) == 5 and result.prefill_ms > 0
    assert all(0 <= t < 256 for t in result.tokens)
    # 2 layers × (S [1, 4, 16, 16] + z [1, 4, 16]) float32, whatever the position
    assert result.state_bytes == 2 * (4 * 16 * 16 + 4 * 16) * 4
    assert "decode: median" in result.summary()


def test_generate_with_trt_says_it_is_not_available(tmp_path):
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed here"):
        generate(load_model("linear-tiny"), tmp_path, backend="trt")
    assert not list(tmp_path.iterdir())  # said before exporting anything


def test_cli_export_both_then_check_stream(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["export", "softmax-tiny", "-o", str(path), "--mode", "both", "--opset", "23"]) == 0
    assert all(p.exists() for p in stream_paths(path, "both").values())
    assert main(["check", str(path), "--mode", "stream", "--model", "softmax-tiny", "--new-tokens", "2",
                 "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("PASSED") == 2
    assert '"mode": "stream"' in (tmp_path / "s.json").read_text()


def test_cli_generate_runs(capsys):
    assert main(["generate", "linear-tiny", "--new-tokens", "4", "--prompt-len", "3"]) == 0
    assert "generated (4 tokens)" in capsys.readouterr().out
