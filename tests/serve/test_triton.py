"""attnx on a real Triton Inference Server: the bundled `tritonserver` of the nvidia-pytriton wheel.

One server for the module (127.0.0.1, free ports) serves three models written by `attnx triton`:
linear-tiny in full mode and in stream mode (idle timeout 1.5 s), softmax-tiny in stream mode. Every
request loop is bounded; every client has a timeout. Offline references: ONNX Runtime on the same
files, the eager model in float64.
"""

import concurrent.futures
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (the test extra has it)")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from attnx.check.stream import OrtStream  # noqa: E402
from attnx.check.tolerances import TOLERANCES  # noqa: E402
from attnx.cli.main import main  # noqa: E402
from attnx.errors import BackendUnavailableError, InputError  # noqa: E402
from attnx.exporters.onnx_export import export  # noqa: E402
from attnx.exporters.stream import export_stream  # noqa: E402
from attnx.generate import random_prompt  # noqa: E402
from attnx.models import load_model  # noqa: E402
from attnx.serve import server as server_module  # noqa: E402
from attnx.serve.client import ServerModel, ServerRequestError  # noqa: E402
from attnx.serve.config import read_config  # noqa: E402
from attnx.serve.repository import write_repository  # noqa: E402

try:
    server_module.find_tritonserver()
    NO_SERVER = None
except BackendUnavailableError as exc:
    NO_SERVER = str(exc)

IDLE_TIMEOUT_S = 1.5
NEW_TOKENS = 8
# same graphs, same ONNX Runtime CPU provider as offline: only the threads' summation order may differ
SAME_GRAPH = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    work = tmp_path_factory.mktemp("graphs")
    lin, sm = load_model("linear-tiny"), load_model("softmax-tiny")
    export(lin, work / "lin.onnx")
    export_stream(sm, work / "sm.onnx", "both")
    return {"work": work, "lin": lin, "sm": sm}


@pytest.fixture(scope="module")
def repo(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo") / "repo"
    # the command, with a short idle timeout so that the abandoned sequence is freed in the test
    assert main(["triton", "linear-tiny", "-o", str(root), "--backend", "python", "--mode", "stream",
                 "--name", "lin", "--idle-timeout", str(IDLE_TIMEOUT_S)]) == 0
    write_repository(files["work"] / "lin.onnx", root, backend="python", mode="full", name="lin-full")
    write_repository(files["work"] / "sm.onnx", root, backend="python", mode="stream", name="sm")
    return root


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    if NO_SERVER:
        pytest.skip(f"the Triton server cannot run here: {NO_SERVER}")
    log = tmp_path_factory.mktemp("log") / "tritonserver.log"
    with server_module.serve(repo, http_port=server_module.free_port(), grpc_port=server_module.free_port(),
                             ready_timeout_s=120, log_path=log) as running:
        yield running


def offline_tokens(version_dir: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """What `attnx generate` does offline (attnx.generate.generate's loop) on the repository's own graphs."""
    stream = OrtStream(version_dir / "prefill.onnx", version_dir / "decode.onnx")
    logits, states = stream.start(np.array([prompt], dtype=np.int64))
    tokens = [int(logits[0, -1].argmax())]
    for _ in range(new_tokens - 1):
        logits, states = stream.step(np.array([[tokens[-1]]], dtype=np.int64), states)
        tokens.append(int(logits[0, -1].argmax()))
    return tokens


@pytest.mark.parametrize("length", [1, 37, 300])
def test_full_requests_over_http_and_grpc_equal_onnxruntime_offline(server, repo, files, length):
    from polygraphy.backend.onnxrt import SessionFromOnnx

    ids = np.random.default_rng(length).integers(0, 256, (1, length), dtype=np.int64)
    offline = SessionFromOnnx(str(repo / "lin-full" / "1" / "full.onnx"), providers=["cpu"])().run(
        ["logits"], {"input_ids": ids})[0]
    lm64 = files["lin"].module.double().eval()
    with torch.no_grad():
        reference = lm64(torch.from_numpy(ids)).numpy()
    tol = TOLERANCES["fp32"]
    for url in (server.http_url, f"grpc://{server.grpc_url}"):
        model = ServerModel(url, "lin-full", timeout_s=30)
        reply = model.infer(ids, logits=True)
        model.close()
        assert reply.logits.shape == (1, length, 256)
        np.testing.assert_allclose(reply.logits, offline, **SAME_GRAPH, err_msg=url)
        np.testing.assert_allclose(reply.logits, reference, rtol=tol.rtol, atol=tol.atol, err_msg=url)
        assert reply.next_token == int(offline[0, -1].argmax())


def test_interleaved_sequences_equal_offline_generation(server, repo):
    """16 linear-tiny sequences and 4 softmax-tiny ones (growing caches), one request of each in turn."""
    rng = np.random.default_rng(0)
    sequences = [("lin", 1000 + i) for i in range(16)] + [("sm", 2000 + i) for i in range(4)]
    prompts = {sid: rng.integers(0, 256, int(rng.integers(1, 24))).tolist() for _, sid in sequences}
    clients = {name: ServerModel(f"grpc://{server.grpc_url}", name, timeout_s=30) for name in ("lin", "sm")}
    got = {sid: [] for _, sid in sequences}
    for step in range(NEW_TOKENS):
        for name, sid in sequences:
            ids = np.array([prompts[sid] if step == 0 else got[sid][-1:]], dtype=np.int64)
            reply = clients[name].infer(ids, sequence_id=sid, start=step == 0, end=step == NEW_TOKENS - 1)
            got[sid].append(reply.next_token)
    for client in clients.values():
        client.close()
    for name, sid in sequences:
        assert got[sid] == offline_tokens(repo / name / "1", prompts[sid], NEW_TOKENS), (name, sid)


def test_abandoned_sequence_is_freed_after_its_idle_timeout(server):
    model = ServerModel(server.http_url, "lin", timeout_s=30)
    model.infer(np.array([[1, 2, 3]]), sequence_id=3001, start=True)  # never ended
    assert model.infer(np.array([[4]]), sequence_id=3002, start=True, end=True).sequences_held >= 1
    deadline = time.monotonic() + IDLE_TIMEOUT_S + 10
    held = None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        held = model.infer(np.array([[4]]), sequence_id=3003, start=True, end=True).sequences_held
        if held == 0:
            break
    assert held == 0, f"sequence 3001 still held {IDLE_TIMEOUT_S} s + 10 s after its last request"
    with pytest.raises(ServerRequestError, match="START"):
        model.infer(np.array([[5]]), sequence_id=3001)
    model.close()


def test_bad_requests_get_errors_and_the_other_sequences_go_on(server, repo):
    import tritonclient.grpc as grpcclient

    url = f"grpc://{server.grpc_url}"
    model = ServerModel(url, "lin", timeout_s=30)
    prompt = [7, 8, 9, 10]
    tokens = [model.infer(np.array([prompt]), sequence_id=4001, start=True).next_token]

    def raw(data, sequence_id, start=False):
        tensor = grpcclient.InferInput("input_ids", list(data.shape), {np.float32: "FP32", np.int64: "INT64"}[
            data.dtype.type])
        tensor.set_data_from_numpy(data)
        return model.client.infer("lin", [tensor], sequence_id=sequence_id, sequence_start=start, client_timeout=30)

    from tritonclient.utils import InferenceServerException

    bad = [(lambda: raw(np.ones((1, 2), np.float32), 4002, True), "data-type|datatype|FP32|TYPE_INT64"),
           (lambda: raw(np.ones((1, 2, 3), np.int64), 4003, True), "shape|dims"),
           (lambda: raw(np.array([[256]], np.int64), 4004, True), r"token ids in \[0, 256\), found 256"),
           (lambda: raw(np.array([[1]], np.int64), 4005), "START"),       # decode before START
           (lambda: raw(np.array([[1]], np.int64), 4001 + 10**9), "START")]  # a correlation ID never seen
    for request, message in bad:
        with pytest.raises(InferenceServerException, match=message):
            request()
        tokens.append(model.infer(np.array([[tokens[-1]]]), sequence_id=4001).next_token)
    assert model.client.is_server_live() and model.client.is_model_ready("lin")
    tokens.append(model.infer(np.array([[tokens[-1]]]), sequence_id=4001, end=True).next_token)
    model.close()
    assert tokens == offline_tokens(repo / "lin" / "1", prompt, len(tokens))


def test_generate_through_the_server_writes_what_offline_generation_writes(server, repo, tmp_path):
    out = tmp_path / "server.json"
    assert main(["generate", "lin", "--server", f"grpc://{server.grpc_url}", "--prompt-len", "9",
                 "--new-tokens", "6", "--seed", "3", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    prompt = random_prompt(256, 9, 3)[0].tolist()
    assert record["prompt"] == prompt and record["seed"] == 3 and record["model"] == "lin"
    assert record["tokens"] == offline_tokens(repo / "lin" / "1", prompt, 6)
    # `attnx generate` offline (its own export of linear-tiny, the model the repository was written from)
    offline = tmp_path / "offline.json"
    assert main(["generate", "linear-tiny", "--prompt-len", "9", "--new-tokens", "6", "--seed", "3",
                 "--json", str(offline)]) == 0
    offline_record = json.loads(offline.read_text())
    assert (offline_record["prompt"], offline_record["tokens"]) == (record["prompt"], record["tokens"])


def test_onnxruntime_and_tensorrt_configs_validate_against_the_protobuf(files, tmp_path):
    for backend in ("onnxruntime", "tensorrt"):
        for mode, source in (("stream", files["work"] / "sm.onnx"), ("full", files["work"] / "lin.onnx")):
            repo = write_repository(source, tmp_path / backend / mode, backend=backend, mode=mode, name="m")
            config = text_format.Parse((repo.root / "m" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
            assert config.platform == {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}[backend]
            if mode == "stream":
                states = {(s.input_name, s.output_name) for s in config.sequence_batching.state}
                assert states == {(f"past.{i}.{k}", f"present.{i}.{k}") for i in (0, 1) for k in ("key", "value")}
                # the cache grows along its third axis [B, H, T, D]: dynamic, starting empty
                assert all(list(s.dims) == [4, -1, 16] and list(s.initial_state[0].dims) == [4, 0, 16]
                           for s in config.sequence_batching.state)
            else:
                assert not config.HasField("sequence_batching")
            engine = repo.root / "m" / "1" / "model.plan"
            if backend == "tensorrt":
                assert engine.exists() != bool(repo.notes)  # built, or a note saying it was not and how to
            else:
                assert (repo.root / "m" / "1" / "model.onnx").is_file()
    with pytest.raises(InputError, match="no_such_field"):
        read_config('name: "m" no_such_field: 1')


def test_no_tritonserver_is_a_clear_exit_2(monkeypatch, tmp_path, capsys, repo):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(server_module, "_wheel_root", lambda: None)  # nvidia-pytriton not installed
    assert main(["triton", "serve", str(repo), "--http-port", "1", "--grpc-port", "2"]) == 2
    assert "expected a tritonserver binary, found none" in capsys.readouterr().err


def test_bench_serve_state_bytes_and_one_level_on_the_server(server, repo):
    from attnx.bench.serve import decode_level, state_bytes

    def decode(name):
        return onnx.load(str(repo / name / "1" / "decode.onnx"), load_external_data=False)

    # linear-tiny: 2 layers × (state_s [4, 16, 16] + state_z [4, 16]) float32, at any position;
    # softmax-tiny: 2 layers × (key + value [4, T, 16]) float32
    for position in (128, 8192):
        assert state_bytes(decode("lin"), position) == 2 * (4 * 16 * 16 + 4 * 16) * 4
        assert state_bytes(decode("sm"), position) == 2 * 2 * 4 * position * 16 * 4
    row = decode_level(f"grpc://{server.grpc_url}", "lin", 2, 4, 3)
    assert row["concurrency"] == 2 and row["tokens_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0


def test_restarted_server_keeps_the_configuration_and_serves_8_concurrent_sequences(server, repo):
    """Last in the module: stops the module's server, then `attnx triton serve` on the same repository."""
    names = ("lin", "lin-full", "sm")
    before = {n: ServerModel(server.http_url, n).config for n in names}
    server.stop()
    http, grpc = server_module.free_port(), server_module.free_port()
    process = subprocess.Popen([sys.executable, "-m", "attnx.cli", "triton", "serve", str(repo), "--http-port",
                                str(http), "--grpc-port", str(grpc)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not server_module._ready(f"http://127.0.0.1:{http}/v2/health/ready"):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.5)
        assert {n: ServerModel(f"127.0.0.1:{http}", n).config for n in names} == before

        prompts = [random_prompt(256, 5 + i, i)[0].tolist() for i in range(8)]

        def one(i):
            model = ServerModel(f"grpc://127.0.0.1:{grpc}", "lin", timeout_s=30)
            try:
                return model.generate(prompts[i], NEW_TOKENS, sequence_id=5000 + i)[0]
            finally:
                model.close()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(one, range(8)))
        assert got == [offline_tokens(repo / "lin" / "1", p, NEW_TOKENS) for p in prompts]
    finally:
        process.terminate()  # SIGTERM: attnx stops tritonserver and its stubs
        process.wait(60)
    assert not server_module._ready(f"http://127.0.0.1:{http}/v2/health/ready")
