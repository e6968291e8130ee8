"""The kernels rung on the CPU: every attnx kernel's own CUDA source, compiled onto the emulator of
trt_plugins/emulation, against its op's float64 reference (`tools/gpu_check.py --emulate`).

Each op runs 10 fresh random cases per dtype (float32, float16, bfloat16): case i takes length 1, 37,
300, 1024 or a random one in turn, cases 0-4 head dims the tensor-core paths take (multiples of 16 up
to 128) and cases 5-9 any up to 256, every attribute value, with gpu_check's
tolerances (atol·rms(reference) + rtol·|reference|, atol and rtol per dtype from
attnx/check/tolerances.py). Each case runs under two thread schedules whose outputs must agree bit for
bit, and inside page-guarded buffers. The seed is printed, and `--seed` on gpu_check repeats a run.
What this cannot see (timing, occupancy, the device's own rounding of exp) is in
trt_plugins/emulation/README.md; the GPU run of the same script is still owed where no GPU was lent.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from attnx.ops import REGISTRY
from helpers.build import REPO

PLUGIN_OPS = [name for name, spec in REGISTRY.items() if spec.plugin is not None]
CASES = 10


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_kernel_matches_the_float64_reference_on_the_emulator(emulated_kernels, op, tmp_path):
    seed = random.randrange(2**31)
    print(f"gpu_check seed: {seed}")
    report_path = tmp_path / "emulated.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--emulate", "--lib",
                           str(emulated_kernels), "--ops", op, "--cases", str(CASES), "--seed", str(seed),
                           "--json", str(report_path)], capture_output=True, text=True, timeout=1200)
    print(proc.stdout)
    assert proc.returncode == 0, f"seed {seed}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    assert report["ran"] and report["emulated"] and report["passed"] and not report["missing"]
    cases = report["checks"][op]
    assert sorted({c["dtype"] for c in cases}) == ["bf16", "fp16", "fp32"] and len(cases) == 3 * CASES
    assert all(c["passed"] and c["schedules_agree"] for c in cases)
    for dtype in ("fp32", "fp16", "bf16"):
        lengths = {c["shape"]["N"] for c in cases if c["dtype"] == dtype}
        assert {1, 37, 300, 1024} <= lengths, (dtype, lengths)


def test_gpu_check_rejects_an_unknown_op():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--emulate", "--ops", "Softmax"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--ops 'Softmax': expected a comma-separated list of LinearAttention" in proc.stderr


def test_gpu_check_runs_without_polygraphy_graphsurgeon_or_tensorrt(emulated_kernels, tmp_path):
    """A GPU machine may have torch, numpy and onnx but none of attnx's graph or engine tooling: the
    harness must not need them (here blocked from importing) to check a kernel."""
    report_path = tmp_path / "r.json"
    argv = [str(REPO / "tools" / "gpu_check.py"), "--emulate", "--lib", str(emulated_kernels), "--ops",
            "SparseAttention", "--cases", "1", "--json", str(report_path)]
    code = ("import runpy, sys\n"
            "for name in ('polygraphy', 'onnx_graphsurgeon', 'tensorrt', 'onnxruntime'):\n"
            "    sys.modules[name] = None  # import fails\n"
            f"sys.argv = {argv!r}\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert json.loads(report_path.read_text())["passed"]


def test_gpu_check_allows_a_near_zero_reference_its_subnormal_spacing_and_no_more(gpu_check):
    """An all-but-zero float16 reference (relu² of scores near 0) is compared to a few subnormal steps
    (float16's spacing below 6.1e-5 is 6e-8), and any larger error still fails."""
    import torch

    ref = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.3e-6], dtype=torch.float64)
    step = 2.0 ** -24
    assert gpu_check._compare((ref + 2 * step).to(torch.float16), ref, "fp16")["passed"]
    assert not gpu_check._compare((ref + 2e-6).to(torch.float16), ref, "fp16")["passed"]
    assert not gpu_check._compare((ref + 2 * step).float(), ref, "fp32")["passed"]  # float32 has no such slack


def test_gpu_check_times_several_calls_per_interval(gpu_check):
    """The benchmark timer spans `inner` back-to-back calls per pair of CUDA events (so host set-up between
    calls does not idle the device inside the interval) and reports one call's share. A stand-in for
    torch.cuda whose events read a call counter shows what it measures."""
    import types

    calls = []

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = len(calls)

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return float(end.at - self.at)  # "milliseconds": calls between the two events

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Event=Event, synchronize=lambda: None))
    assert gpu_check._time(fake, lambda: calls.append(1), reps=3, inner=10) == 1.0
    assert len(calls) == 1 + 3 * 10  # a warm-up call, then three intervals of ten
