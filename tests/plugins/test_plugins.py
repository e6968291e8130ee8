"""The plugin-build rung (DESIGN.md): nvcc builds libattnx_plugins.so for sm_87 and sm_90, it loads
without TensorRT, and its creators, fields and serialisation agree with the op registry.

The library is built once per session into build/trt_plugins-tests (CMake rebuilds only what
changed since the last run there). Only a machine without cmake or nvcc skips these tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types

import pytest

from attnx.check import trt_parity
from attnx.cli.main import build_parser
from attnx.errors import AttnxError, BackendUnavailableError, InputError
from attnx.ops import REGISTRY
from attnx.plugins import build, engine, headers, library
from attnx.plugins.library import PluginCreateError, PluginLibraryError
from helpers.build import PLUGIN_TEST_ARCHS, PLUGIN_TEST_BUILD_DIR, REPO

PLUGIN_OPS = [name for name, spec in REGISTRY.items() if spec.plugin is not None]


@pytest.fixture(scope="session")
def creators(plugin_lib) -> dict[str, dict]:
    return {c["name"]: c for c in library.plugin_info(plugin_lib)}


def _same_value(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        # fields are float32: compare at float32 precision
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0) or (a == b)
    return a == b


# ---------------------------------------------------------------- creators vs the registry

@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_creator_matches_registry(creators, op):
    spec = REGISTRY[op]
    assert spec.plugin.name in creators, (f"no creator named {spec.plugin.name!r} in the library; it has "
                                          f"{', '.join(creators) or 'none'}")
    c = creators[spec.plugin.name]
    assert (c["version"], c["namespace"]) == (spec.plugin.version, spec.plugin.namespace) == ("1", "attnx")
    want = spec.plugin_fields()
    assert [(f["name"], f["type"]) for f in c["fields"]] == [(f["name"], f["type"]) for f in want]
    for got, expected in zip(c["fields"], want):
        assert _same_value(got["default"], expected["default"]), (op, got, expected)


def test_every_creator_has_a_registry_op(creators):
    plugin_names = {REGISTRY[op].plugin.name for op in PLUGIN_OPS}
    assert set(creators) <= plugin_names, f"creators without an op spec: {set(creators) - plugin_names}"


# ---------------------------------------------------------------- field round trips

def _non_default(attr):
    """A valid value other than the default, derived from the spec's Attr."""
    if attr.type is bool:
        return not attr.default
    if attr.choices is not None:
        return next(c for c in reversed(attr.choices) if c != attr.default)
    if attr.type is int:
        value = attr.default + 1
        return value if attr.high is None or value <= attr.high else attr.default - 1
    value = 0.25  # exact in float32
    assert value != attr.default and attr.validate("test", value) == value
    return value


def _serialised(spec, fields: list[dict]) -> dict:
    assert [f["name"] for f in fields] == [a.name for a in spec.attributes]
    assert [f["type"] for f in fields] == [a.plugin_field_type for a in spec.attributes]
    return {f["name"]: f["value"] for f in fields}


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_roundtrip_defaults(plugin_lib, op):
    spec = REGISTRY[op]
    got = _serialised(spec, library.roundtrip(spec.plugin.name, {}, path=plugin_lib))
    for f in spec.plugin_fields():
        assert _same_value(got[f["name"]], f["default"]), (f, got)
    # the defaults given explicitly serialise the same
    explicit = {f["name"]: f["default"] for f in spec.plugin_fields()}
    assert library.roundtrip(spec.plugin.name, explicit, path=plugin_lib) == \
        library.roundtrip(spec.plugin.name, {}, path=plugin_lib)


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_roundtrip_non_defaults(plugin_lib, op):
    spec = REGISTRY[op]
    for attr in spec.attributes:
        value = attr.to_onnx(_non_default(attr))
        got = _serialised(spec, library.roundtrip(spec.plugin.name, {attr.name: value}, path=plugin_lib))
        assert _same_value(got[attr.name], value), (attr.name, value, got)
        for other in spec.attributes:
            if other is not attr:
                assert _same_value(got[other.name], other.to_onnx(other.default)), (attr.name, other.name, got)


# ---------------------------------------------------------------- bad fields

def _bad_values(attr) -> list:
    """Values the spec rejects, each as the plugin field would carry it."""
    if attr.type is bool:
        return [2, -1]
    if attr.choices is not None:
        return ["bogus", attr.choices[0].upper() + "x", ""]
    bad = []
    if attr.low is not None:
        bad.append(attr.low if attr.low_open else attr.low - 1)
        bad.append(-1.0 if attr.type is float else int(min(attr.low, 0)) - 1)
    if attr.high is not None:
        bad.append(attr.high + 1)
    if attr.type is float:
        bad += [float("nan"), float("inf")]
    return [type(attr.default)(v) if attr.type is int else v for v in bad]


def _expect_create_error(plugin_lib, creator, fields, *words, types_=None):
    with pytest.raises(PluginCreateError) as info:
        library.roundtrip(creator, fields, types=types_, path=plugin_lib)
    message = str(info.value)
    for w in words:
        assert w in message, f"{w!r} not in the error {message!r}"
    return message


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_bad_field_values(plugin_lib, op):
    spec = REGISTRY[op]
    for attr in spec.attributes:
        values = _bad_values(attr)
        assert [v for v in values if not _rejected_by_spec(spec, attr, v)] == [], "the test's bad values must be bad"
        for value in values:
            message = _expect_create_error(plugin_lib, spec.plugin.name, {attr.name: value}, attr.name, "expected")
            for choice in attr.choices or ():
                assert choice in message, (message, choice)


def _rejected_by_spec(spec, attr, value) -> bool:
    try:
        attr.validate(spec.name, bool(value) if attr.type is bool and value in (0, 1) else value)
    except AttnxError:
        return True
    return False


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_bad_field_types_and_names(plugin_lib, op):
    spec = REGISTRY[op]
    name = spec.plugin.name
    for attr in spec.attributes:
        wrong = "float32" if attr.plugin_field_type != "float32" else "int32"
        _expect_create_error(plugin_lib, name, {attr.name: 1}, attr.name, attr.plugin_field_type,
                             types_={attr.name: wrong})
    message = _expect_create_error(plugin_lib, name, {"no_such_field": 1}, "no_such_field")
    for attr in spec.attributes:  # the error lists the fields there are
        assert attr.name in message


def test_unknown_creator_is_an_error_not_a_crash(plugin_lib):
    with pytest.raises(PluginLibraryError, match="no creator named 'NoSuchPlugin'"):
        library.roundtrip("NoSuchPlugin", {}, path=plugin_lib)


# ---------------------------------------------------------------- loading without TensorRT

def test_library_loads_without_tensorrt(plugin_lib):
    """A fresh interpreter that never imports tensorrt dlopens the library and lists its creators."""
    code = ("import ctypes, json, sys\n"
            "from attnx.plugins.library import plugin_info\n"
            f"names = [c['name'] for c in plugin_info({str(plugin_lib)!r})]\n"
            "maps = open('/proc/self/maps').read()\n"
            "assert 'tensorrt' not in sys.modules\n"
            "print(json.dumps({'names': names, 'nvinfer': 'libnvinfer' in maps, 'cudart': 'libcudart' in maps}))\n")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["names"] and not out["nvinfer"] and not out["cudart"], out


def test_library_needs_no_tensorrt_or_cuda_runtime(plugin_lib):
    """NEEDED names only the C/C++ runtime, and every undefined symbol is theirs (--no-undefined)."""
    dynamic = subprocess.run(["readelf", "-d", "-W", str(plugin_lib)], capture_output=True, text=True, check=True)
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.stdout.splitlines() if "(NEEDED)" in line]
    assert needed and all(n.split(".so")[0] in {"libstdc++", "libm", "libgcc_s", "libc", "libdl", "libpthread",
                                                "librt", "ld-linux-x86-64"} for n in needed), needed
    symbols = subprocess.run(["readelf", "--dyn-syms", "-W", str(plugin_lib)], capture_output=True, text=True,
                             check=True)
    undefined = [line.split()[7] for line in symbols.stdout.splitlines()
                 if len(line.split()) >= 8 and line.split()[6] == "UND" and line.split()[4] != "WEAK"]
    foreign = [s for s in undefined if "@" not in s or s.split("@")[-1].split("_")[0]
               not in {"GLIBC", "GLIBCXX", "CXXABI", "GCC"}]
    assert foreign == [], f"symbols left for the loader to find outside libc/libstdc++: {foreign}"
    exported = {line.split()[7] for line in symbols.stdout.splitlines()
                if len(line.split()) >= 8 and line.split()[6] != "UND" and line.split()[4] == "GLOBAL"}
    assert {"getCreators", "setLoggerFinder", "attnx_linear_attention_forward"} <= exported


# ---------------------------------------------------------------- building

def test_build_rejects_bad_archs():
    with pytest.raises(build.BuildError, match="compute capability"):
        build._normalise_archs(["sm_8x"])
    with pytest.raises(build.BuildError, match="no CUDA architectures"):
        build._normalise_archs([])
    with pytest.raises(build.BuildError, match="sm_75 is older than the plugins need: sm_80 or newer"):
        build._normalise_archs(["87", "75"])
    assert build._normalise_archs(["sm_87", " 90"]) == ["87", "90"]


def test_build_step_reports_progress_and_failure():
    logged = []
    build._run([sys.executable, "-c", "import time; time.sleep(0.5); print('[ 50%] Building CUDA object x')"],
               logged.append, "step", heartbeat_s=0.1)
    assert any("step still running" in line for line in logged), logged
    assert any("[ 50%] Building CUDA object x" in line for line in logged), logged
    with pytest.raises(build.BuildError, match=r"step failed \(exit 3\); last output:\nboom"):
        build._run([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], logged.append, "step")


def test_tampered_header_wheel_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    wheels = tmp_path / "attnx" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / headers.WHEEL_FILE).write_bytes(b"not the pinned wheel")
    with pytest.raises(headers.HeaderError, match=f"does not equal the pinned {headers.WHEEL_SHA256}"):
        headers.provisioned_include_dir(log=lambda msg: None)


def test_tensorrt_root_without_headers_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORRT_ROOT", str(tmp_path))
    with pytest.raises(headers.HeaderError, match="include/NvInfer.h does not exist"):
        headers.include_dir()


# ---------------------------------------------------------------- the CLI module

def _cli(argv, capsys):
    args = build_parser().parse_args(argv)
    rc = args.run(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_plugins_info_json(plugin_lib, capsys):
    rc, out, _ = _cli(["plugins", "info", "--json", "--lib", str(plugin_lib)], capsys)
    assert rc == 0
    data = json.loads(out)
    assert data["library"] == str(plugin_lib)
    assert data["creators"] == library.plugin_info(plugin_lib)


def test_cli_plugins_info_text(plugin_lib, capsys):
    rc, out, _ = _cli(["plugins", "info", "--lib", str(plugin_lib)], capsys)
    assert rc == 0
    assert "LinearAttention version 1 namespace attnx" in out
    assert "feature_map char = 'elu'" in out


def test_cli_plugins_path(plugin_lib, capsys, monkeypatch, tmp_path):
    assert _cli(["plugins", "path", "--lib", str(plugin_lib)], capsys)[:2] == (0, f"{plugin_lib}\n")
    monkeypatch.setenv(library.ENV_VAR, str(plugin_lib))
    assert _cli(["plugins", "path"], capsys)[:2] == (0, f"{plugin_lib}\n")
    monkeypatch.setenv(library.ENV_VAR, str(tmp_path / "missing.so"))
    with pytest.raises(PluginLibraryError, match=r"no plugin library at .*missing.so \(\$ATTNX_PLUGIN_LIB\)"):
        _cli(["plugins", "path"], capsys)


def test_cli_plugins_build_is_incremental(plugin_lib, capsys):
    """The session's build dir again: CMake finds it up to date, the path is printed."""
    rc, out, err = _cli(["plugins", "build", "--arch", ",".join(PLUGIN_TEST_ARCHS), "--out", str(PLUGIN_TEST_BUILD_DIR),
                         "--jobs", "2"], capsys)
    assert rc == 0 and out == f"{plugin_lib}\n"
    assert "building libattnx_plugins.so for sm_87, sm_90" in err and "built " in err


def test_cli_plugins_build_rejects_bad_jobs(capsys):
    with pytest.raises(SystemExit) as exc:  # a usage error, before anything is looked for
        _cli(["plugins", "build", "--jobs", "0"], capsys)
    assert exc.value.code == 2 and "--jobs: expected an integer >= 1, found 0" in capsys.readouterr().err


@pytest.fixture
def no_tensorrt(monkeypatch):
    """TensorRT absent whatever this machine has: `import tensorrt` raises ImportError."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def tensorrt_without_runtime(monkeypatch):
    """Bindings that import but whose runtime library does not load on first use."""
    fake = types.ModuleType("tensorrt")
    fake.__file__ = "/fake/tensorrt/__init__.py"

    class Logger:
        ERROR = 1

        def __init__(self, *args):
            raise OSError("libnvinfer.so.10: cannot open shared object file: No such file or directory")

    fake.Logger = Logger
    monkeypatch.setitem(sys.modules, "tensorrt", fake)


def test_cli_build_says_tensorrt_is_not_installed(no_tensorrt, capsys, tmp_path, exported):
    _, path = exported("linear-tiny")  # a valid file: build checks its own arguments before TensorRT
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed here .*import tensorrt failed"):
        _cli(["build", str(path), "-o", str(tmp_path / "m.engine"), "--fp16"], capsys)
    assert not (tmp_path / "m.engine").exists()


def test_cli_build_says_tensorrt_runtime_does_not_load(tensorrt_without_runtime, capsys, tmp_path, exported):
    _, path = exported("linear-tiny")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed here .*libnvinfer.so.10"):
        _cli(["build", str(path), "-o", str(tmp_path / "m.engine")], capsys)


def test_check_trt_says_tensorrt_is_not_installed(no_tensorrt, exported):
    loaded, path = exported("linear-tiny")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed here"):
        trt_parity.check_trt(path, loaded, seq_lens=[1, 37])


def test_check_trt_says_tensorrt_runtime_does_not_load(tensorrt_without_runtime, exported):
    loaded, path = exported("linear-tiny")
    with pytest.raises(BackendUnavailableError, match="imports from /fake/tensorrt.* but its runtime does not load"):
        trt_parity.check_trt(path, loaded)


def _engine_stood_in_by_onnxruntime(monkeypatch, plugin_lib, scale=1.0):
    """TensorRT cannot run here, so check_trt's engine is replaced by ONNX Runtime on the attnx-form model
    (outputs times `scale`): everything around the engine (library lookup, inputs, the engine's shape
    profile, the comparison against float64 eager, the report) runs as it does with TensorRT."""
    import numpy as np
    from polygraphy.backend import trt as polygraphy_trt
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    built = {}
    monkeypatch.setattr(engine, "require_tensorrt", lambda: None)
    monkeypatch.setattr(engine, "TrtFormFromOnnx", lambda model: model)

    def loader(model, *, precision, plugin_library, seq, batch):
        built.update(precision=precision, plugin_library=plugin_library, seq=seq, batch=batch)
        return model

    class Runner(OnnxrtRunner):
        def __init__(self, model, name):
            super().__init__(SessionFromOnnx(model.SerializeToString(), providers=["cpu"]), name=name)

        def infer_impl(self, feed_dict, *args, **kwargs):
            return {k: np.asarray(v) * scale for k, v in super().infer_impl(feed_dict, *args, **kwargs).items()}

    monkeypatch.setattr(engine, "EngineFromOnnx", loader)
    monkeypatch.setattr(polygraphy_trt, "TrtRunner", Runner)
    return built


def test_check_trt_compares_the_engine_with_float64_eager(monkeypatch, plugin_lib, exported):
    loaded, path = exported("linear-tiny")
    built = _engine_stood_in_by_onnxruntime(monkeypatch, plugin_lib)
    report = trt_parity.check_trt(path, loaded, seq_lens=[1, 37], batch=2, seed=3, plugin_library=plugin_lib)
    assert built == {"precision": "fp32", "plugin_library": plugin_lib, "seq": engine.ShapeRange(1, 37, 37),
                     "batch": engine.ShapeRange(2, 2, 2)}
    assert report.backend == "tensorrt" and report.seed == 3
    assert sorted({o.seq_len for o in report.outputs}) == [1, 37] and all(o.passed for o in report.outputs)


def test_check_trt_reports_a_wrong_engine(monkeypatch, plugin_lib, exported):
    loaded, path = exported("linear-tiny")
    _engine_stood_in_by_onnxruntime(monkeypatch, plugin_lib, scale=1.01)
    report = trt_parity.check_trt(path, loaded, seq_lens=[5], plugin_library=plugin_lib)
    assert not any(o.passed for o in report.outputs)


def test_shapes_parse():
    assert engine.parse_shapes(["1:64:512", "batch:1:2:4"]) == {
        "seq": engine.ShapeRange(1, 64, 512), "batch": engine.ShapeRange(1, 2, 4)}
    with pytest.raises(InputError, match="unknown axis 'heads'; expected one of batch, seq, past"):
        engine.parse_shapes(["heads:1:2:4"])
    with pytest.raises(InputError, match="expected 1 <= min <= opt <= max, got '4:2:8'"):
        engine.parse_shapes(["seq:4:2:8"])
    with pytest.raises(InputError, match="axis 'seq' twice"):
        engine.parse_shapes(["1:2:3", "seq:1:2:3"])
    with pytest.raises(InputError, match="expected axis:min:opt:max"):
        engine.parse_shapes(["1:2"])


# ---------------------------------------------------------------- the GPU harness

def test_gpu_check_says_there_is_no_cuda_device(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no CUDA device" in proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ran"] is False and "no CUDA device" in report["why"]


def _c_signatures() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Every ATTNX_API function in trt_plugins/*/*Kernel.h: name -> (return type, [(parameter type, name)])."""
    import re

    out = {}
    for header in sorted((REPO / "trt_plugins").glob("*/*Kernel.h")):
        text = re.sub(r"\s+", " ", header.read_text())
        for ret, name, params in re.findall(r"ATTNX_API ([\w ]+?) (attnx_\w+)\(([^)]*)\);", text):
            out[name] = (ret.strip(), [(t.replace(" *", "*"), n) for t, n in
                                       (p.strip().rsplit(" ", 1) for p in params.split(","))])
    return out


def test_gpu_check_calls_every_kernel_with_the_headers_signatures(plugin_lib, gpu_check):
    """Each op's kernel binding (attnx/ops/<op>/kernel.py, which tools/gpu_check.py and these tests call
    through) declares the C headers' parameters, names and ctypes types one for one, and their return
    types; tools/gpu_check.py wires every plugin op, and the built library exports every entry point."""
    import ctypes

    from attnx.ops import ENTRY_POINTS

    to_ctypes = {"const void*": ctypes.c_void_p, "void*": ctypes.c_void_p, "const float*": ctypes.c_void_p,
                 "float*": ctypes.c_void_p, "int64_t": ctypes.c_int64, "int32_t": ctypes.c_int32,
                 "float": ctypes.c_float, "size_t": ctypes.c_size_t, "int": ctypes.c_int}
    headers_ = _c_signatures()
    assert set(ENTRY_POINTS) == set(PLUGIN_OPS)
    assert {k.op for k in gpu_check.KERNELS} == set(PLUGIN_OPS)
    table = {entry.symbol: entry for entries in ENTRY_POINTS.values() for entry in entries}
    lib = ctypes.CDLL(str(plugin_lib))
    for symbol, entry in table.items():
        assert symbol in headers_, f"{symbol} is declared in no trt_plugins/*/*Kernel.h"
        ret, params = headers_[symbol]
        assert [(name, to_ctypes[t]) for t, name in params] == list(entry.params), (symbol, params)
        assert to_ctypes[ret] is entry.restype, (symbol, ret)
        assert hasattr(lib, symbol), f"{plugin_lib} does not export {symbol}"
    assert set(headers_) <= set(table), f"not given a ctypes binding: {set(headers_) - set(table)}"


def test_docs_list_every_plugin_field():
    """docs/plugins.md restates the fields for readers; it must not drift from the registry."""
    text = (REPO / "docs" / "plugins.md").read_text()
    for op in PLUGIN_OPS:
        spec = REGISTRY[op]
        assert f"\n## {spec.plugin.name}\n" in text, f"docs/plugins.md has no section for {spec.plugin.name}"
        section = text.split(f"\n## {spec.plugin.name}\n")[1].split("\n## ")[0]
        for f in spec.plugin_fields():
            assert f"| {f['name']} | {f['type']} |" in section, (spec.plugin.name, f)


def test_engine_input_is_retargeted_to_plugin_nodes(exported, tmp_path):
    """attnx build / check --backend trt hand TensorRT the plugin form; a file already in it is used as is."""
    import onnx

    _, path = exported("linear-tiny")
    model = onnx.load(str(path))
    trt_model = engine.TrtFormFromOnnx(lambda: model)()
    assert trt_model is not model
    nodes = [n for n in trt_model.graph.node if n.domain == "trt.plugins"]
    assert [n.op_type for n in nodes] and {n.op_type for n in nodes} <= {REGISTRY[op].plugin.name for op in PLUGIN_OPS}
    assert not [n for n in trt_model.graph.node if n.domain == "attnx"]
    assert engine.TrtFormFromOnnx(trt_model)() is trt_model


def test_linear_attention_entry_point_refuses_bad_calls_on_the_host(plugin_lib):
    """The C entry point checks shapes, attributes and pointers before it touches CUDA: each bad call
    returns its attnx_status (no GPU here, so a launch would fail with ATTNX_ERR_CUDA instead)."""
    import ctypes

    from attnx.ops.linear_attention import kernel

    lib = ctypes.CDLL(str(plugin_lib))
    size = kernel.WORKSPACE_SIZE.bind(lib)
    # causal on CUDA cores: (D·E + D) floats per 64-row chunk; non-causal: one state
    for dtype in (0, 1, 2):  # E = 8 is not a multiple of 16: CUDA cores whatever the dtype
        assert size(2, 3, 130, 16, 8, 1, dtype) == 2 * 3 * 3 * (16 * 8 + 16) * 4
        assert size(2, 3, 130, 16, 8, 0, dtype) == 2 * 3 * (16 * 8 + 16) * 4
        assert size(2, 3, 0, 16, 8, 1, dtype) == 0
    # causal on tensor cores (float16, bfloat16; D a multiple of 16 up to 64, E a multiple of 16): none
    assert size(2, 3, 130, 64, 128, 1, 1) == size(2, 3, 130, 16, 16, 1, 2) == 0
    assert size(2, 3, 130, 64, 128, 1, 0) == 2 * 3 * 3 * (64 * 128 + 64) * 4
    assert size(2, 3, 130, 128, 64, 1, 1) == 2 * 3 * 3 * (128 * 64 + 128) * 4  # D = 128: CUDA cores
    fn = kernel.FORWARD.bind(lib)
    lib.attnx_status_string.restype = ctypes.c_char_p
    fake = 0x1000  # never dereferenced: every call below is refused first

    def call(N=8, M=8, D=16, E=16, causal=0, fm=0, normalize=1, eps=1e-6, chunk=64, dtype=1, s=None, z=None,
             s_out=fake, z_out=fake, ws=None, B=1):
        return fn(fake, fake, fake, s, z, fake, s_out, z_out, ws, B, 2, N, M, D, E, causal, fm, normalize, eps,
                  chunk, dtype, None)

    cases = {"M != N with causal": (call(M=9, causal=1), 1), "N = 0": (call(N=0), 1),
             "D = 257": (call(D=257), 2), "E = 300": (call(E=300), 2), "dtype 7": (call(dtype=7), 3),
             "feature_map 3": (call(fm=3), 4), "eps 0": (call(eps=0.0), 4), "chunk 0": (call(chunk=0), 4),
             "causal 2": (call(causal=2), 4), "state_s without state_z": (call(s=fake), 5),
             "state_s_out without state_z_out": (call(z_out=None), 5),
             "causal float32 without workspace": (call(causal=1, dtype=0), 6),
             # tensor cores: a block per (b, h, 64 columns of E): 2·(2²⁹ + 1)·4 blocks exceed the grid
             "causal float16, B·H·E-tiles above 2³¹": (call(N=1, M=1, E=256, causal=1, B=2**29 + 1), 1),
             "non-causal, no state outputs, no workspace": (call(s_out=None, z_out=None), 6)}
    for what, (got, want) in cases.items():
        assert got == want, f"{what}: status {got} ({lib.attnx_status_string(got).decode()}), expected {want}"


def test_relu_squared_entry_point_refuses_bad_calls_on_the_host(plugin_lib):
    """The ReluSquaredAttention entry point refuses a bias that does not broadcast to [B, H, N, M], and its
    other bad calls, before touching CUDA (no GPU here: a launch would return ATTNX_ERR_CUDA = 7 instead)."""
    import ctypes

    from attnx.ops.relu_squared_attention import kernel

    lib = ctypes.CDLL(str(plugin_lib))
    fn = kernel.FORWARD.bind(lib)
    lib.attnx_status_string.restype = ctypes.c_char_p
    fake = 0x1000  # never dereferenced: every call below is refused first

    def call(bias=None, bias_dims=(1, 1, 1, 1), N=4, M=4, D=8, causal=0, norm=0, dtype=0):
        return fn(fake, fake, fake, bias, *bias_dims, fake, 2, 3, N, M, D, 8, causal, 0.0, norm, 512, 0, dtype, None)

    cases = {"bias M axis 3 for M = 4": (call(fake, (1, 1, 4, 3)), 1),
             "bias B axis 3 for B = 2": (call(fake, (3, 1, 4, 4)), 1),
             "bias H axis 2 for H = 3": (call(fake, (2, 2, 1, 4)), 1),
             "bias N axis 0": (call(fake, (1, 1, 0, 4)), 1),
             "M != N with causal": (call(M=5, causal=1), 1), "D = 257": (call(D=257), 2),
             "dtype 7": (call(dtype=7), 3), "norm 4": (call(norm=4), 4)}
    for what, (got, want) in cases.items():
        assert got == want, f"{what}: status {got} ({lib.attnx_status_string(got).decode()}), expected {want}"
