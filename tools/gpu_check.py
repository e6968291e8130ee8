#!/usr/bin/env python
"""The kernels rung (DESIGN.md): every CUDA kernel's C entry point against its float64 reference.

On a CUDA machine (PyTorch with CUDA; TensorRT not needed) this builds libattnx_plugins.so for the
device's architecture (or loads --lib), calls each kernel's `attnx_<op>_forward` through the op's
ctypes binding (attnx/ops/<op>/kernel.py) on torch CUDA tensors over many random shapes (case i of
each kernel and dtype has length 1, 37, 300, 1024 or a random one, cycling, so five cases cover
them all), dtypes float32/float16/bfloat16 and head dims up to 256, and compares with the op's
float64 reference (attnx/ops/<op>/naive.py). An element fails when |kernel - reference| >
atol·rms(reference) + rtol·|reference| + 4 steps of the dtype's subnormal spacing (6e-8 for
float16: a reference that is all but zero has no relative precision left in the dtype), with (atol,
rtol) the dtype's entry of attnx/check/tolerances.py: rms scaling makes atol mean the same for
unnormalised ops, whose outputs grow with the length. Inputs are drawn on the CPU, so a seed gives
the same cases on any device.

Then it times each kernel at B=8, H=16, D=64, N = 1k…16k in float16 beside PyTorch eager (the
chunked and windowed forms in attnx/ops/<op>/torch_op.py) and torch SDPA (for the relu²-shaped ops,
and with the pattern's boolean mask for SparseAttention), with the memory-bandwidth floor for
LinearAttention (bytes of q, k, v, y over the measured device-to-device copy bandwidth). It
prints a table, writes JSON, and exits 1 if any check fails or a kernel's entry point is missing
from the library, 3 when there is no CUDA device (the rung did not run), 0 otherwise.

Then, with onnxruntime-gpu installed (else recorded as skipped, with the providers it has), the
ONNX Runtime GPU step (ort_gpu_step): linear-tiny's whole-model file and its prefill and decode
graphs on ONNX Runtime's providers as attnx configures them (attnx.check.providers) against the
eager model in float64 at the fp32 tolerance: the attnx form on cuda,cpu and on tensorrt,cuda,cpu,
and the TensorRT form (plugin nodes, the plugin library as trt_extra_plugin_lib_paths) on
tensorrt,cuda,cpu.
A failed run counts as a failed case; --no-ort skips the step.

With --emulate the same cases run on the CPU, on no GPU: the kernels' own sources compiled onto
the emulator of trt_plugins/emulation (built into build/kernels-emulated, or --lib), inputs and
outputs in page-guarded buffers, and each case twice, with a block's threads in ascending and
then descending order between barriers; the two must agree bit for bit. No timings.

    python tools/gpu_check.py [--lib PATH] [--json gpu-check.json] [--cases 12] [--ops A,B] [--no-bench] [--no-ort]
    python tools/gpu_check.py --emulate [--lib PATH] [--cases 12] [--ops A,B]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# after REPO is on sys.path, so the script runs from a checkout
from attnx.files import write_text  # noqa: E402
from attnx.ops import (ENTRY_POINTS, REGISTRY, linear_attention, mixed_chunk_attention,  # noqa: E402
                       performer_features, relu_squared_attention, sparse_attention)
from attnx.ops.entry_point import attribute_values, c_value  # noqa: E402

EXIT_FAILED, EXIT_NO_DEVICE = 1, 3
SUBNORMAL_STEPS = 4  # of the output dtype's subnormal spacing, allowed on top of atol and rtol
DTYPES = ("fp32", "fp16", "bf16")
LENGTHS = (1, 37, 300, 1024)
BENCH = {"B": 8, "H": 16, "D": 64, "N": (1024, 2048, 4096, 8192, 16384)}


@dataclasses.dataclass
class Kernel:
    """One op's kernel (its entry points: attnx.ops.ENTRY_POINTS[op]): how to draw a case, call the
    kernel, and time it beside torch."""

    op: str
    draw: Callable[..., dict]          # (rng, dtype, dev, index) -> case: {"shape", "attrs", "inputs" (on dev)}
    call: Callable[..., tuple]         # (lib, case, dtype, dev) -> outputs (torch tensors on dev)
    bench: Callable[..., dict] | None  # (lib, n, dev, timer) -> {name: ms}; CUDA only
    refusals: Callable[..., list] | None = None  # (lib, dev) -> [{"refusal", "status", "passed"}]


def _torch():
    import torch

    return torch


class CudaDevice:
    """Where the kernels run: a CUDA device, tensors from torch's allocator, the current stream."""

    emulated = False

    def __init__(self, torch):
        self.torch = torch

    def tensor(self, t):
        return t.to("cuda")

    def empty(self, shape, dtype=None):
        return self.torch.empty(*shape, dtype=dtype or self.torch.float32, device="cuda")

    def stream(self) -> int:
        return self.torch.cuda.current_stream().cuda_stream

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()


class EmulatedDevice:
    """Where the kernels run: the CPU emulator (attnx/plugins/emulation.py), tensors on its guarded
    buffers, no stream (every call is synchronous)."""

    emulated = True

    def __init__(self, torch, emulated):
        self.torch = torch
        self.emu = emulated

    def tensor(self, t):
        return self.emu.tensor(t)

    def empty(self, shape, dtype=None):
        return self.emu.empty(shape, dtype or self.torch.float32)

    def stream(self) -> None:
        return None

    def synchronize(self) -> None:
        violations = self.emu.guard_violations()
        if violations:
            raise RuntimeError("; ".join(violations))


def _dt(torch, dtype: str):
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def _code(dtype: str) -> int:
    return DTYPES.index(dtype)  # attnx_dtype: FLOAT32 = 0, FLOAT16 = 1, BFLOAT16 = 2


def _ptr(t) -> int | None:
    return None if t is None else t.data_ptr()


def _length(rng, index: int | None = None) -> int:
    """Case `index` of a kernel and dtype takes LENGTHS[index % 5], or at index 4 (mod 5) a random length
    (a multiple of no chunk or window, mostly), so five cases cover every length; None draws one of them."""
    lengths = LENGTHS + (int(rng.integers(2, 700)),)
    return int(lengths[index % len(lengths)] if index is not None else rng.choice(lengths))


def _head_dim(rng, index: int | None = None) -> int:
    """Cases 0-4, 10-14, ... take head dims the tensor-core paths take (multiples of 16 up to 128), the
    others any head dim up to 256, so ten cases cover both paths at every length."""
    if index is not None and (index // 5) % 2 == 0:
        return int(rng.choice((16, 32, 64, 128)))
    return int(rng.choice((1, 16, 32, 64, 100, 128, 256)))


def _randn(dev, shape, dtype, positive=False, scale=1.0):
    """Standard normal values (|x| + 0.05 when positive) in `dtype`, then times `scale` and rounded to
    `dtype` again, on `dev`; drawn on the CPU, so a seed gives the same case on a GPU and on the emulator."""
    torch = dev.torch
    x = torch.randn(*shape, dtype=torch.float32)
    x = (x.abs() + 0.05 if positive else x).to(_dt(torch, dtype))
    if scale != 1.0:
        x = (x.float() * scale).to(_dt(torch, dtype))
    return dev.tensor(x)


def _check_status(lib, op: str, status: int, case: dict) -> None:
    if status != 0:
        lib.attnx_status_string.restype = ctypes.c_char_p
        text = lib.attnx_status_string(status).decode()
        if hasattr(lib, "attnx_emu_error"):  # the emulator says what failed
            lib.attnx_emu_error.restype = ctypes.c_char_p
            text += "; the emulator: " + lib.attnx_emu_error().decode()
        raise RuntimeError(f"{op}: entry point returned {status} ({text}) for {case['shape']} {case['attrs']}")


def _ok(lib, op: str, result: tuple) -> tuple:
    """A timed call's outputs, after checking its status (a timing of a refused call means nothing)."""
    _check_status(lib, op, result[0], {"shape": "the benchmark shape", "attrs": ""})
    return result[1]


# ---------------------------------------------------------------- LinearAttention

def _la_draw(rng, dtype, dev, index):
    causal = bool(rng.integers(2))
    fm = str(rng.choice(linear_attention.SPEC.attr("feature_map").choices))
    normalize = bool(rng.integers(2))
    B, H, D, E = int(rng.integers(1, 4)), int(rng.integers(1, 5)), _head_dim(rng, index), _head_dim(rng, index)
    N = _length(rng, index)
    M = N if causal else _length(rng)
    state = bool(rng.integers(2))
    state_out = bool(rng.integers(2))  # without state outputs the non-causal form uses the workspace
    # identity features with a normaliser need positive features (as Performer's are)
    positive = fm == "identity" and normalize
    scale = D ** -0.5
    torch = dev.torch
    q = _randn(dev, (B, H, N, D), dtype, positive, scale)
    k = _randn(dev, (B, H, M, D), dtype, positive, scale)
    v = _randn(dev, (B, H, M, E), dtype)
    s0 = dev.tensor(torch.randn(B, H, D, E)) if state else None
    z0 = dev.tensor((torch.rand(B, H, D) + 0.5) * M) if state else None
    attrs = linear_attention.SPEC.resolve({"causal": causal, "feature_map": fm, "normalize": normalize,
                          "chunk_size": int(rng.choice((1, 16, 64, 100)))})
    return {"shape": {"B": B, "H": H, "N": N, "M": M, "D": D, "E": E, "state": state, "state_out": state_out},
            "attrs": attrs, "inputs": [q, k, v, s0, z0]}


def _la_forward(lib, q, k, v, s0, z0, attrs, dtype, dev, state_out=True):
    B, H, N, D = q.shape
    M, E = k.shape[2], v.shape[3]
    y = dev.empty((B, H, N, E), q.dtype)
    s_out = dev.empty((B, H, D, E)) if state_out else None
    z_out = dev.empty((B, H, D)) if state_out else None
    ws_bytes = lib.attnx_linear_attention_workspace_size(B, H, N, D, E, int(attrs["causal"]), _code(dtype))
    ws = dev.empty((max(ws_bytes, 1),), dev.torch.uint8)
    status = lib.attnx_linear_attention_forward(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), _ptr(s0), _ptr(z0), y.data_ptr(), _ptr(s_out),
        _ptr(z_out), ws.data_ptr(), B, H, N, M, D, E, *attribute_values(linear_attention.SPEC, attrs), _code(dtype),
        dev.stream())
    return status, (y, s_out, z_out) if state_out else (y,)


def _la_call(lib, case, dtype, dev):
    q, k, v, s0, z0 = case["inputs"]
    status, out = _la_forward(lib, q, k, v, s0, z0, case["attrs"], dtype, dev, case["shape"]["state_out"])
    _check_status(lib, "LinearAttention", status, case)
    return out


def _la_refusals(lib, dev) -> list[dict]:
    """Calls the entry point must refuse with a status (and not launch): D above 256, causal with M != N."""
    out = []
    for what, (n, m, d), causal, want in (("D = 257", (4, 4, 257), False, 2), ("causal, M != N", (4, 5, 8), True, 1)):
        q = dev.tensor(dev.torch.zeros(1, 1, n, d))
        k = dev.tensor(dev.torch.zeros(1, 1, m, d))
        v = dev.tensor(dev.torch.zeros(1, 1, m, 8))
        status, _ = _la_forward(lib, q, k, v, None, None, linear_attention.SPEC.resolve({"causal": causal}), "fp32",
                                dev)
        out.append({"op": "LinearAttention", "refusal": what, "status": status, "passed": status == want})
    return out


def _la_bench(lib, n, dev, timer):
    torch = dev.torch
    B, H, D = BENCH["B"], BENCH["H"], BENCH["D"]
    q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.float16) * D ** -0.5 for _ in range(3))
    out = {}
    for causal in (True, False):
        attrs = linear_attention.SPEC.resolve({"causal": causal})
        tag = "causal" if causal else "full"
        out[f"kernel {tag}"] = timer(
            lambda: _ok(lib, "LinearAttention", _la_forward(lib, q, k, v, None, None, attrs, "fp16", dev)))
        out[f"eager chunked {tag}" if causal else f"eager {tag}"] = timer(
            lambda: linear_attention.chunk_linear_attn(q, k, v, **attrs))
    out["floor"] = 4 * B * H * n * D * 2 / _copy_bandwidth(torch) * 1e3
    return out


# ---------------------------------------------------------------- ReluSquaredAttention

def _rs_draw(rng, dtype, dev, index):
    causal = bool(rng.integers(2))
    B, H, D, E = int(rng.integers(1, 4)), int(rng.integers(1, 5)), _head_dim(rng, index), _head_dim(rng, index)
    N = _length(rng, index)
    M = N if causal else _length(rng)
    attrs = relu_squared_attention.SPEC.resolve({
        "causal": causal, "scale": float(rng.choice((0.0, 0.3))), "norm": str(rng.choice(relu_squared_attention.NORMS)),
        "fixed_length": int(rng.choice((1, 128, 512))),
        "norm_placement": str(rng.choice(relu_squared_attention.PLACEMENTS))})
    inputs = [_randn(dev, (B, H, N, D), dtype), _randn(dev, (B, H, M, D), dtype), _randn(dev, (B, H, M, E), dtype)]
    bias_shape = [(B, H, N, M), (1, 1, N, M), (1, H, 1, M), (B, 1, N, 1), None][int(rng.integers(5))]
    if bias_shape is not None:
        inputs.append(_randn(dev, bias_shape, dtype))
    return {"shape": {"B": B, "H": H, "N": N, "M": M, "D": D, "E": E, "bias": bias_shape}, "attrs": attrs,
            "inputs": inputs}


def _rs_forward(lib, q, k, v, attrs, dtype, dev, bias=None):
    B, H, N, D = q.shape
    M, E = k.shape[2], v.shape[3]
    y = dev.empty((B, H, N, E), q.dtype)
    bias_dims = tuple(bias.shape) if bias is not None else (1, 1, 1, 1)
    status = lib.attnx_relu_squared_attention_forward(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), _ptr(bias), *bias_dims, y.data_ptr(), B, H, N, M, D, E,
        *attribute_values(relu_squared_attention.SPEC, attrs), _code(dtype), dev.stream())
    return status, (y,)


def _rs_call(lib, case, dtype, dev):
    q, k, v, *bias = case["inputs"]
    status, out = _rs_forward(lib, q, k, v, case["attrs"], dtype, dev, bias[0] if bias else None)
    _check_status(lib, "ReluSquaredAttention", status, case)
    return out


def _rs_bench(lib, n, dev, timer):
    torch = dev.torch
    B, H, D = BENCH["B"], BENCH["H"], BENCH["D"]
    q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.float16) for _ in range(3))
    out = {}
    for causal in (True, False):
        tag = "causal" if causal else "full"
        attrs = relu_squared_attention.SPEC.resolve({"causal": causal})
        out[f"kernel {tag}"] = timer(lambda: _ok(lib, "ReluSquaredAttention", _rs_forward(lib, q, k, v, attrs, "fp16", dev)))
        with _flash_backend(torch):
            out[f"sdpa flash {tag}"] = timer(
                lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal))
    return out


def _rs_refusals(lib, dev) -> list[dict]:
    """Calls the entry point must refuse with a status (and not launch): a bias axis neither 1 nor full,
    D above 256."""
    attrs = relu_squared_attention.SPEC.resolve({})
    out = []
    for what, d, bias_shape, want in (("bias [1, 1, 4, 3] for M = 4", 8, (1, 1, 4, 3), 1),
                                      ("bias [2, 1, 4, 4] for B = 1", 8, (2, 1, 4, 4), 1),
                                      ("D = 257", 257, None, 2)):
        q = dev.tensor(dev.torch.zeros(1, 1, 4, d))
        bias = None if bias_shape is None else dev.tensor(dev.torch.zeros(*bias_shape))
        status, _ = _rs_forward(lib, q, q, q, attrs, "fp32", dev, bias)
        out.append({"op": "ReluSquaredAttention", "refusal": what, "status": status, "passed": status == want})
    return out


def _flash_backend(torch):
    """SDPA restricted to its flash-attention kernel, the baseline the ReluSquaredAttention goal names."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.FLASH_ATTENTION)


# ---------------------------------------------------------------- MixedChunkAttention

def _mc_draw(rng, dtype, dev, index):
    causal = bool(rng.integers(2))
    B, H, S, E = int(rng.integers(1, 4)), int(rng.integers(1, 5)), _head_dim(rng, index), _head_dim(rng, index)
    N = _length(rng, index)
    attrs = mixed_chunk_attention.SPEC.resolve({
        "causal": causal, "chunk_size": int(rng.choice((1, 7, 64, 128, 256, 1000))),
        "quad_scale": float(rng.choice((0.0, 0.05))), "lin_scale": float(rng.choice((0.0, 0.01)))})
    shape = (B, H, N, S)
    inputs = [_randn(dev, shape, dtype) for _ in range(4)] + [_randn(dev, (B, H, N, E), dtype)]
    g = attrs["chunk_size"]
    bias_shape = [(B, H, g, g), (1, 1, g, g), (1, H, 1, g), (B, 1, g, 1), None][int(rng.integers(5))]
    if bias_shape is not None:  # the in-chunk bias, as FLASH's T5 bias
        inputs.append(_randn(dev, bias_shape, dtype))
    return {"shape": {"B": B, "H": H, "N": N, "S": S, "E": E, "bias": bias_shape}, "attrs": attrs, "inputs": inputs}


def _mc_forward(lib, qq, qk, lq, lk, v, attrs, dtype, dev, bias=None):
    B, H, N, S = qq.shape
    E = v.shape[3]
    y = dev.empty((B, H, N, E), qq.dtype)
    ws_bytes = lib.attnx_mixed_chunk_attention_workspace_size(B, H, N, S, E, int(attrs["causal"]))
    ws = dev.empty((max(ws_bytes, 1),), dev.torch.uint8)
    bias_dims = tuple(bias.shape) if bias is not None else (1, 1, 1, 1)
    status = lib.attnx_mixed_chunk_attention_forward(
        qq.data_ptr(), qk.data_ptr(), lq.data_ptr(), lk.data_ptr(), v.data_ptr(), _ptr(bias), *bias_dims,
        y.data_ptr(), ws.data_ptr(), B, H, N, S, E, *attribute_values(mixed_chunk_attention.SPEC, attrs),
        _code(dtype), dev.stream())
    return status, (y,)


def _mc_call(lib, case, dtype, dev):
    qq, qk, lq, lk, v, *bias = case["inputs"]
    status, out = _mc_forward(lib, qq, qk, lq, lk, v, case["attrs"], dtype, dev, bias[0] if bias else None)
    _check_status(lib, "MixedChunkAttention", status, case)
    return out


def _mc_refusals(lib, dev) -> list[dict]:
    """Calls the entry point must refuse with a status (and not launch): a bias axis neither 1 nor full in
    [B, H, g, g]."""
    attrs = mixed_chunk_attention.SPEC.resolve({"chunk_size": 4})
    out = []
    for what, bias_shape in (("bias [1, 1, 4, 3] for g = 4", (1, 1, 4, 3)),
                             ("bias [1, 1, 5, 5] for g = 4 (N = 5)", (1, 1, 5, 5)),
                             ("bias [2, 1, 4, 4] for B = 1", (2, 1, 4, 4))):
        q = dev.tensor(dev.torch.zeros(1, 1, 5, 8))
        status, _ = _mc_forward(lib, q, q, q, q, q, attrs, "fp32", dev, dev.tensor(dev.torch.zeros(*bias_shape)))
        out.append({"op": "MixedChunkAttention", "refusal": what, "status": status, "passed": status == 1})
    return out


def _mc_bench(lib, n, dev, timer):
    torch = dev.torch
    B, H, D = BENCH["B"], BENCH["H"], BENCH["D"]
    xs = [torch.randn(B, H, n, D, device="cuda", dtype=torch.float16) for _ in range(5)]
    out = {}
    for causal in (True, False):
        tag = "causal" if causal else "full"
        attrs = mixed_chunk_attention.SPEC.resolve({"causal": causal})
        out[f"kernel {tag}"] = timer(lambda: _ok(lib, "MixedChunkAttention", _mc_forward(lib, *xs, attrs, "fp16", dev)))
        out[f"eager chunked {tag}"] = timer(lambda: mixed_chunk_attention.chunk_mixed_attn(*xs, **attrs))
    return out


# ---------------------------------------------------------------- PerformerFeatures

def _pf_draw(rng, dtype, dev, index):
    B, H, D = int(rng.integers(1, 4)), int(rng.integers(1, 5)), _head_dim(rng)
    N, M = _length(rng, index), int(rng.choice((1, 16, 37, 64, 256, 300)))
    # x' = x·D^(-1/4) at half scale keeps W x' − ‖x'‖²/2 small enough that key_fixed's exp fits float16
    x = dev.tensor((dev.torch.randn(B, H, N, D) * 0.5).to(_dt(dev.torch, dtype)))
    w = _randn(dev, (M, D), dtype)
    attrs = performer_features.SPEC.resolve({"kind": str(rng.choice(performer_features.KINDS)),
                                             "eps": float(rng.choice((0.0, 1e-4, 1e-2))),
                                             "offset": float(rng.choice((0.0, 2.0)))})
    return {"shape": {"B": B, "H": H, "N": N, "D": D, "M": M}, "attrs": attrs, "inputs": [x, w]}


def _pf_forward(lib, x, w, attrs, dtype, dev, workspace=True):
    B, H, N, D = x.shape
    M = w.shape[0]
    features = dev.empty((B, H, N, M), x.dtype)
    kind = c_value(performer_features.SPEC.attr("kind"), attrs["kind"])
    ws_bytes = lib.attnx_performer_features_workspace_size(B, H, N, kind)
    ws = dev.empty((max(ws_bytes, 1),), dev.torch.uint8) if workspace else None
    status = lib.attnx_performer_features_forward(
        x.data_ptr(), w.data_ptr(), features.data_ptr(), _ptr(ws), B, H, N, D, M,
        *attribute_values(performer_features.SPEC, attrs), _code(dtype), dev.stream())
    return status, (features,)


def _pf_call(lib, case, dtype, dev):
    status, out = _pf_forward(lib, *case["inputs"], case["attrs"], dtype, dev)
    _check_status(lib, "PerformerFeatures", status, case)
    return out


def _pf_refusals(lib, dev) -> list[dict]:
    """Calls the entry point must refuse with a status (and not launch): D above 256, kind key without workspace."""
    out = []
    for what, d, kind, workspace, want in (("D = 257", 257, "query", True, 2),
                                           ("kind key, null workspace", 8, "key", False, 6)):
        x = dev.tensor(dev.torch.zeros(1, 1, 4, d))
        w = dev.tensor(dev.torch.zeros(16, d))
        status, _ = _pf_forward(lib, x, w, performer_features.SPEC.resolve({"kind": kind}), "fp32", dev, workspace)
        out.append({"op": "PerformerFeatures", "refusal": what, "status": status, "passed": status == want})
    return out


def _pf_bench(lib, n, dev, timer):
    torch = dev.torch
    B, H, D = BENCH["B"], BENCH["H"], BENCH["D"]
    x = torch.randn(B, H, n, D, device="cuda", dtype=torch.float16) * 0.5
    w = torch.randn(4 * D, D, device="cuda", dtype=torch.float16)  # M = 4·D features
    out = {}
    for kind in ("query", "key"):
        attrs = performer_features.SPEC.resolve({"kind": kind})
        out[f"kernel {kind}"] = timer(
            lambda: _ok(lib, "PerformerFeatures", _pf_forward(lib, x, w, attrs, "fp16", dev)))
        out[f"eager {kind}"] = timer(lambda: performer_features.favor_features(x, w, **attrs))
    return out


# ---------------------------------------------------------------- SparseAttention

def _sa_draw(rng, dtype, dev, index):
    B, H, D, E = int(rng.integers(1, 4)), int(rng.integers(1, 5)), _head_dim(rng, index), _head_dim(rng, index)
    N = _length(rng, index)
    attrs = sparse_attention.SPEC.resolve({
        "pattern": str(rng.choice(sparse_attention.PATTERNS)), "window": int(rng.choice((1, 3, 16, 37))),
        "dilation": int(rng.choice((1, 2, 3))), "stride": int(rng.choice((1, 5, 16, 100))),
        "block": int(rng.choice((1, 7, 64, 100))), "causal": bool(rng.integers(2)),
        "scale": float(rng.choice((0.0, 0.3))), "look_back": int(rng.choice((0, 1, 2))),
        "look_ahead": int(rng.choice((0, 1)))})
    return {"shape": {"B": B, "H": H, "N": N, "D": D, "E": E}, "attrs": attrs,
            "inputs": [_randn(dev, (B, H, N, D), dtype), _randn(dev, (B, H, N, D), dtype),
                       _randn(dev, (B, H, N, E), dtype)]}


def _sa_forward(lib, q, k, v, attrs, dtype, dev):
    B, H, N, D = q.shape
    E = v.shape[3]
    y = dev.empty((B, H, N, E), q.dtype)
    status = lib.attnx_sparse_attention_forward(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), y.data_ptr(), B, H, N, D, E,
        *attribute_values(sparse_attention.SPEC, attrs), _code(dtype), dev.stream())
    return status, (y,)


def _sa_call(lib, case, dtype, dev):
    status, out = _sa_forward(lib, *case["inputs"], case["attrs"], dtype, dev)
    _check_status(lib, "SparseAttention", status, case)
    return out


def _sa_refusals(lib, dev) -> list[dict]:
    """Calls the entry point must refuse with a status (and not launch): D above 256, window 0, block 4097."""
    out = []
    defaults = sparse_attention.SPEC.resolve({})
    for what, d, bad, want in (("D = 257", 257, {}, 2), ("window = 0", 8, {"window": 0}, 4),
                               ("block = 4097", 8, {"block": 4097}, 4)):
        q = dev.tensor(dev.torch.zeros(1, 1, 4, d))
        status, _ = _sa_forward(lib, q, q, q, {**defaults, **bad}, "fp32", dev)
        out.append({"op": "SparseAttention", "refusal": what, "status": status, "passed": status == want})
    return out


def _sa_bench(lib, n, dev, timer):
    torch = dev.torch
    B, H, D = BENCH["B"], BENCH["H"], BENCH["D"]
    q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.float16) for _ in range(3))
    pos = torch.arange(n, device="cuda")
    out = {}
    for pattern in ("local", "strided", "block"):
        attrs = sparse_attention.SPEC.resolve({"pattern": pattern})
        out[f"kernel {pattern}"] = timer(
            lambda: _ok(lib, "SparseAttention", _sa_forward(lib, q, k, v, attrs, "fp16", dev)))
        out[f"eager {pattern}"] = timer(lambda: sparse_attention.window_sparse_attn(q, k, v, **attrs))
        mask = sparse_attention.allowed(pos[:, None], pos[None, :], **{a: attrs[a] for a in attrs if a != "scale"})
        out[f"sdpa mask {pattern}"] = timer(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        del mask
    return out


# Issue 4's speed goals: (op, N, timing, baseline, comparison of timing ÷ baseline, bound, words)
GOALS = [
    ("LinearAttention", 8192, "kernel causal", "eager chunked causal", "<", 1.0,
     "causal beats PyTorch eager's chunked form"),
    ("LinearAttention", 8192, "kernel causal", "floor", "<=", 2.0, "causal within 2x of the memory-bandwidth floor"),
    ("ReluSquaredAttention", 8192, "kernel causal", "sdpa flash causal", "<=", 1.5,
     "causal within 1.5x of SDPA's flash kernel"),
    ("ReluSquaredAttention", 8192, "kernel full", "sdpa flash full", "<=", 1.5,
     "non-causal within 1.5x of SDPA's flash kernel"),
]


def goals(benches: list[dict]) -> list[dict]:
    """Each goal with its measured ratio (None where a timing is missing or out of memory)."""
    out = []
    for op, n, timing, baseline, compare, bound, words in GOALS:
        row = next((r["ms"] for r in benches if r["op"] == op and r["N"] == n), {})
        a, b = row.get(timing), row.get(baseline)
        ratio = a / b if a is not None and b else None
        met = ratio is not None and (ratio < bound if compare == "<" else ratio <= bound)
        out.append({"op": op, "N": n, "goal": words, "ratio": ratio, "bound": f"{compare} {bound}", "met": met})
    return out


KERNELS = [
    Kernel("LinearAttention", _la_draw, _la_call, _la_bench, _la_refusals),
    Kernel("ReluSquaredAttention", _rs_draw, _rs_call, _rs_bench, _rs_refusals),
    Kernel("MixedChunkAttention", _mc_draw, _mc_call, _mc_bench, _mc_refusals),
    Kernel("PerformerFeatures", _pf_draw, _pf_call, _pf_bench, _pf_refusals),
    Kernel("SparseAttention", _sa_draw, _sa_call, _sa_bench, _sa_refusals),
]


# ---------------------------------------------------------------- checking and timing

def _copy_bandwidth(torch, _cache={}) -> float:
    """Bytes/s of a device-to-device copy (read + write), measured once: the achievable bandwidth."""
    if "bw" not in _cache:
        src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        ms = _time(torch, lambda: dst.copy_(src), reps=20)
        _cache["bw"] = 2 * src.numel() / (ms / 1e3)
    return _cache["bw"]


def _time(torch, fn, reps: int = 10, inner: int = 10) -> float:
    """Median milliseconds of one call of `fn` on the current stream, after a warm-up call: each of `reps`
    timings spans `inner` calls back to back, so the host's time to set up a call (allocations, ctypes)
    overlaps the device's work on the one before instead of idling the device inside the interval."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return sorted(times)[len(times) // 2]


def _compare(out, ref, dtype: str) -> dict:
    import torch

    from attnx.check.tolerances import TOLERANCES

    tol = TOLERANCES[dtype]
    got = out.double().cpu()
    ref = ref.double().cpu()
    if got.shape != ref.shape:
        return {"passed": False, "why": f"shape {list(got.shape)}, reference {list(ref.shape)}"}
    diff = (got - ref).abs()
    rms = float(ref.square().mean().sqrt()) if ref.numel() else 0.0
    # below the dtype's normal range there is no relative precision left, only its subnormal spacing:
    # a reference that is all but zero (relu² of scores near 0, say) may be off by a few of those steps
    info = torch.finfo(_dt(torch, dtype))
    bound = tol.atol * max(rms, 1e-30) + tol.rtol * ref.abs() + SUBNORMAL_STEPS * info.smallest_normal * info.eps
    finite = bool(got.isfinite().all())
    return {"passed": finite and bool((diff <= bound).all()), "max_abs": float(diff.max()) if diff.numel() else 0.0,
            "max_rel_to_rms": float(diff.max() / max(rms, 1e-30)) if diff.numel() else 0.0, "finite": finite}


def _same_bits(a, b) -> bool:
    import torch

    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def _run_case(lib, kernel: Kernel, case: dict, dtype: str, dev) -> tuple:
    outs = kernel.call(lib, case, dtype, dev)
    dev.synchronize()
    return outs


def check_kernel(lib, kernel: Kernel, cases: int, rng, dev, log=lambda m: None) -> list[dict]:
    """`cases` random cases per dtype, each against the op's float64 reference. On the emulator each case
    runs twice, with a block's threads in ascending and then descending order between barriers: a kernel
    that reads shared memory another thread writes without a barrier between gives different bits."""
    spec = REGISTRY[kernel.op]
    results = []
    for dtype in DTYPES:
        start = time.perf_counter()
        for index in range(cases):
            case = kernel.draw(rng, dtype, dev, index)
            entry = {"op": kernel.op, "dtype": dtype, "shape": case["shape"],
                     "attrs": {k: v for k, v in case["attrs"].items()}}
            try:
                outs = _run_case(lib, kernel, case, dtype, dev)
                if dev.emulated:
                    dev.emu.set_schedule(True)
                    try:
                        again = _run_case(lib, kernel, case, dtype, dev)
                    finally:
                        dev.emu.set_schedule(False)
                    entry["schedules_agree"] = all(_same_bits(a, b) for a, b in zip(outs, again))
                refs = spec.reference(*[None if t is None else t.cpu() for t in case["inputs"]], **case["attrs"])
                # states are float32 whatever the I/O dtype
                checks = [_compare(o, r, dtype if i == 0 else "fp32") for i, (o, r) in enumerate(zip(outs, refs))]
                entry["outputs"] = checks
                entry["passed"] = all(c["passed"] for c in checks) and entry.get("schedules_agree", True)
                if not entry.get("schedules_agree", True):
                    entry["why"] = ("the outputs differ between the ascending and descending thread schedules: a "
                                    "thread reads shared memory that another writes with no barrier between")
            except Exception as exc:  # a failed launch or a status: the case fails, the run goes on
                entry["passed"], entry["why"] = False, f"{type(exc).__name__}: {exc}"
            results.append(entry)
        log(f"{kernel.op} {dtype}: {cases} cases in {time.perf_counter() - start:.1f} s")
    return results


def bench_kernel(lib, kernel: Kernel, dev) -> list[dict]:
    torch = dev.torch
    rows = []
    for n in BENCH["N"]:
        def timer(fn):
            try:
                return _time(torch, fn, reps=5)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                return None
        rows.append({"op": kernel.op, "N": n, "ms": kernel.bench(lib, n, dev, timer)})
        torch.cuda.empty_cache()
    return rows


def _print_table(checks: dict, missing: list, benches: list) -> None:
    print(f"{'op':<22} {'dtype':<5} {'cases':>5} {'failed':>6} {'worst err/rms':>14}")
    for op, results in checks.items():
        for dtype in DTYPES:
            rs = [r for r in results if r["dtype"] == dtype]
            worst = max((o.get("max_rel_to_rms", math.inf) for r in rs for o in r.get("outputs", [{}])), default=0.0)
            print(f"{op:<22} {dtype:<5} {len(rs):>5} {sum(not r['passed'] for r in rs):>6} {worst:>14.2e}")
    for op in missing:
        print(f"{op:<22} MISSING: the library has no entry point for it")
    if benches:
        print(f"\ntimings, ms (float16, B={BENCH['B']}, H={BENCH['H']}, D={BENCH['D']}; '-' = out of memory); "
              "after each kernel, its time over each baseline of the same form")
        for row in benches:
            parts = []
            for k, v in row["ms"].items():
                text = f"{k} {'-' if v is None else f'{v:.3f}'}"
                if k.startswith("kernel ") and v is not None:
                    tag = k.removeprefix("kernel ")
                    ratios = [f"{v / b:.2f}x {name}" for name, b in row["ms"].items()
                              if b and not name.startswith("kernel ") and (name.endswith(tag) or name == "floor")]
                    text += f" ({', '.join(ratios)})" if ratios else ""
                parts.append(text)
            print(f"  {row['op']:<22} N={row['N']:<6} {'; '.join(parts)}")
        print("\nspeed goals (issue 4)")
        for g in goals(benches):
            ratio = "-" if g["ratio"] is None else f"{g['ratio']:.2f}x"
            print(f"  {g['op']:<22} N={g['N']:<6} {g['goal']}: {ratio} (goal: {g['bound']}x) "
                  f"{'met' if g['met'] else 'NOT met'}")


def _write_json(path: str | None, report: dict) -> None:
    if path:
        write_text(path, json.dumps(report, indent=2) + "\n")  # lands whole, or not at all
        print(f"report written to {path}", file=sys.stderr)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _select(ops: str | None) -> list[Kernel]:
    if ops is None:
        return KERNELS
    names = [o.strip() for o in ops.split(",") if o.strip()]
    known = {k.op: k for k in KERNELS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"gpu_check: --ops {ops!r}: expected a comma-separated list of {', '.join(known)}")
    return [known[n] for n in names]


ORT_MODEL = "linear-tiny"  # its LinearAttention node is a plugin in the TensorRT form
# (graphs, form, providers): graphs "full" is the whole-model file checked by check_parity, "stream" the
# prefill and decode graphs checked by check_stream; form "attnx" as exported, "trt" retargeted (plugin nodes)
ORT_RUNS = tuple((graphs, form, providers) for graphs in ("full", "stream")
                 for form, providers in (("attnx", ["cuda", "cpu"]), ("attnx", ["tensorrt", "cuda", "cpu"]),
                                         ("trt", ["tensorrt", "cuda", "cpu"])))
ORT_SEQ_LENS = (1, 37, 300)  # 37 and 300: not multiples of linear attention's 64-token chunk


def ort_gpu_step(lib_path: Path, work_dir: Path, log=lambda m: None) -> dict:
    """ONNX Runtime on the GPU (attnx.check.providers), ORT_MODEL against its eager model in float64 at
    the fp32 tolerance: the whole-model file (lengths ORT_SEQ_LENS) and the prefill and decode graphs
    (prompts 1 and 37, 3 decode steps), each in the attnx form on cuda and on tensorrt (plugin library
    `lib_path`) and in the TensorRT form (plugin nodes) on tensorrt. Skipped, saying why, without
    onnxruntime-gpu's CUDA provider; a tensorrt run without the TensorRT provider is skipped alone."""
    try:
        import onnxruntime

        from attnx.check.parity import check_parity  # Polygraphy, onnx-graphsurgeon
        from attnx.check.stream import check_stream
    except ImportError as exc:
        why = f"{exc.name or exc} is not installed here: the step needs onnxruntime-gpu and Polygraphy"
        log(f"gpu_check: ONNX Runtime GPU step skipped: {why}")
        return {"ran": False, "passed": None, "why": why}
    import onnx

    from attnx.errors import AttnxError
    from attnx.exporters import export
    from attnx.exporters.stream import export_stream
    from attnx.models import load_model
    from attnx.surgeon.retarget import retarget

    installed = onnxruntime.get_available_providers()
    step: dict[str, Any] = {"onnxruntime": onnxruntime.__version__, "installed": installed, "runs": []}
    if "CUDAExecutionProvider" not in installed:
        step.update(ran=False, passed=None,
                    why=f"onnxruntime {onnxruntime.__version__} has {', '.join(installed)}: not onnxruntime-gpu, "
                        "so there is no CUDA or TensorRT provider to check")
        log(f"gpu_check: ONNX Runtime GPU step skipped: {step['why']}")
        return step
    loaded = load_model(ORT_MODEL)
    full = work_dir / f"{ORT_MODEL}.onnx"
    export(loaded, full)
    files = {("full", "attnx"): {"full": full},
             ("stream", "attnx"): export_stream(loaded, work_dir / f"{ORT_MODEL}-stream.onnx", "both")}
    for graphs in ("full", "stream"):
        files[graphs, "trt"] = {}
        for graph, path in files[graphs, "attnx"].items():
            files[graphs, "trt"][graph] = path.with_name(path.name.replace(".onnx", ".trt.onnx"))
            onnx.save(retarget(onnx.load(path), "trt"), files[graphs, "trt"][graph])
    for graphs, form, providers in ORT_RUNS:
        run: dict[str, Any] = {"graphs": graphs, "form": form, "providers": providers}
        paths = files[graphs, form]
        if "tensorrt" in providers and "TensorrtExecutionProvider" not in installed:
            run.update(passed=None, why=f"no TensorrtExecutionProvider in {', '.join(installed)}")
        else:
            try:
                if graphs == "full":
                    report = check_parity(paths["full"], loaded, seq_lens=ORT_SEQ_LENS, providers=providers,
                                          plugin_library=lib_path)
                else:
                    report = check_stream(loaded, paths["prefill"], paths["decode"], prompt_lens=(1, 37),
                                          new_tokens=3, providers=providers, plugin_library=lib_path)[1]
                run.update(passed=report.passed, backend=report.backend,
                           max_abs_err=max(o.max_abs_err for o in report.outputs))
            except AttnxError as exc:
                run.update(passed=False, why=str(exc))
        verdict = ("ok" if run["passed"] else f"FAILED: {run.get('why', 'outside tolerance')}"
                   if run["passed"] is False else f"skipped: {run['why']}")
        log(f"gpu_check: ONNX Runtime {graphs} {form} form on {','.join(providers)}: {verdict}")
        step["runs"].append(run)
    step.update(ran=True, passed=all(r["passed"] is not False for r in step["runs"]))
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", default=None, help="an already-built library: libattnx_plugins.so, or with "
                                                    "--emulate libattnx_kernels_emulated.so (default: build one)")
    parser.add_argument("--out", default=None, help="build folder (default build/trt_plugins-gpu, with --emulate "
                                                    "build/kernels-emulated)")
    parser.add_argument("--json", default="gpu-check.json", help="report file (default gpu-check.json)")
    parser.add_argument("--cases", type=int, default=12, help="random cases per kernel and dtype (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", default=None, help="only these ops, comma-separated (default: every kernel)")
    parser.add_argument("--no-bench", action="store_true", help="check only; no timings")
    parser.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime GPU step")
    parser.add_argument("--emulate", action="store_true",
                        help="run the kernels' own sources on the CPU emulator (trt_plugins/emulation) instead of "
                             "a GPU: the same cases, each under two thread schedules that must agree bit for bit; "
                             "no timings")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error(f"--cases must be >= 1, got {args.cases}")
    kernels = _select(args.ops)
    report: dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "ran": False}
    torch = _torch()
    import numpy as np

    from attnx.plugins import build

    if args.emulate:
        from attnx.plugins.emulation import EmulatedLibrary

        lib_path = Path(args.lib) if args.lib else build.build_emulated_kernels(args.out, log=_log)
        emulated = EmulatedLibrary(lib_path)
        lib = emulated.lib
        dev = EmulatedDevice(torch, emulated)
        report.update(ran=True, emulated=True, device="CPU emulator (trt_plugins/emulation)", torch=torch.__version__)
    else:
        if not torch.cuda.is_available():
            why = (f"no CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}) sees no GPU; "
                   "the kernels rung did not run (--emulate runs it on the CPU emulator)")
            _log(f"gpu_check: {why}")
            report["why"] = why
            _write_json(args.json, report)
            return EXIT_NO_DEVICE
        props = torch.cuda.get_device_properties(0)
        arch = f"{props.major}{props.minor}"
        report.update(ran=True, emulated=False, device=props.name, arch=f"sm_{arch}", torch=torch.__version__)
        lib_path = Path(args.lib) if args.lib else build.build_library(
            [arch], out_dir=args.out or REPO / "build" / "trt_plugins-gpu", log=_log)
        lib = ctypes.CDLL(str(lib_path))
        dev = CudaDevice(torch)
    report["library"] = str(lib_path)
    wired = {k.op for k in KERNELS}
    missing = [op for op in REGISTRY if REGISTRY[op].plugin is not None and op not in wired]
    missing += [k.op for k in kernels if not all(hasattr(lib, e.symbol) for e in ENTRY_POINTS[k.op])]
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    bench = not args.no_bench and not args.emulate
    checks, benches, refusals = {}, [], []
    for kernel in kernels:
        if kernel.op in missing:
            continue
        for entry in ENTRY_POINTS[kernel.op]:
            entry.bind(lib)
        checks[kernel.op] = check_kernel(lib, kernel, args.cases, rng, dev, _log)
        if kernel.refusals is not None:
            refusals += kernel.refusals(lib, dev)
        if bench and kernel.bench is not None:
            benches += bench_kernel(lib, kernel, dev)
    failed = sum(not r["passed"] for rs in checks.values() for r in rs) + sum(not r["passed"] for r in refusals)
    if args.emulate or args.no_ort:
        report["onnxruntime_gpu"] = {"ran": False, "passed": None,
                                     "why": "--emulate runs no GPU" if args.emulate else "--no-ort"}
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gpu-check-ort-") as tmp:
            report["onnxruntime_gpu"] = ort_gpu_step(lib_path, Path(tmp), _log)
        failed += report["onnxruntime_gpu"]["passed"] is False
    _print_table(checks, missing, benches)
    for r in refusals:
        print(f"{r['op']:<22} refuses {r['refusal']}: status {r['status']} {'✓' if r['passed'] else '✗'}")
    for rs in checks.values():
        for r in rs:
            if not r["passed"]:
                print(f"FAILED {r['op']} {r['dtype']} {r['shape']} {r['attrs']}: "
                      f"{r.get('why') or [o for o in r['outputs'] if not o['passed']]}")
    report.update(passed=failed == 0 and not missing, missing=missing, checks=checks, refusals=refusals,
                  timings=benches, goals=goals(benches) if benches else None,
                  copy_bandwidth_gbs=_copy_bandwidth(torch) / 1e9 if benches else None)
    _write_json(args.json, report)
    if missing:
        _log(f"gpu_check: FAILED: no entry point for {', '.join(missing)}")
    if failed:
        _log(f"gpu_check: FAILED: {failed} case(s) outside tolerance (see {args.json})")
    return EXIT_FAILED if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
