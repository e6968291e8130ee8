"""The CPU emulator itself (trt_plugins/emulation): a correct kernel runs and gives the right numbers,
and each mistake the emulator claims to catch is caught, with a message that says where.

The kernels are tests/plugins/emulator/selftestKernels.cu, built with the same AttnxEmulation.cmake as the
attnx kernels into build/emulator-selftest. Faults that end a process run in a child interpreter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnx.errors import BackendUnavailableError
from attnx.plugins.emulation import EmulatedLibrary
from helpers.build import REPO, require_cmake_and_nvcc

SELFTEST_DIR = REPO / "tests" / "plugins" / "emulator"
SELFTEST_BUILD_DIR = REPO / "build" / "emulator-selftest"
SELFTEST_LIBRARY = "libattnx_emulator_selftest.so"
ERR_CUDA = 7
c_vp, c_int, c_i64, c_uint = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_uint

SIGNATURES = {
    "selftest_block_sum": [c_vp, c_vp, c_int],
    "selftest_missing_barrier": [c_vp, c_vp],
    "selftest_partial_barrier": [c_vp],
    "selftest_split_barriers": [c_vp],
    "selftest_short_warp_shuffle": [c_vp],
    "selftest_exited_lane_shuffle": [c_vp],
    "selftest_shared_store": [c_int, c_int, c_int],
    "selftest_launch_shape": [c_uint, c_uint, c_uint, c_vp],
    "selftest_store_at": [c_vp, c_i64],
    "selftest_load_at": [c_vp, c_vp, c_i64],
    "selftest_deep_stack": [c_vp],
    "selftest_mma_product": [c_vp, c_vp, c_vp, c_int],
    "selftest_mma_product_tf32": [c_vp, c_vp, c_vp],
    "selftest_async_copy": [c_vp, c_vp, c_int],
    "selftest_misaligned_ldmatrix": [c_vp],
    "selftest_split_shuffles": [c_vp],
}


@pytest.fixture(scope="module", params=["register-switch", "ucontext"])
def emu(request) -> EmulatedLibrary:
    """The test kernels on the emulator, once with each way of switching fibers: the x86-64 register
    switch, and ucontext (what other machines get)."""
    from attnx.plugins import build

    require_cmake_and_nvcc("the emulator's test kernels")
    portable = request.param == "ucontext"
    if not portable and platform.machine() != "x86_64":
        pytest.skip(f"the register switch is x86-64 only; this machine is {platform.machine()}")
    path = build.build_emulated_kernels(SELFTEST_BUILD_DIR / request.param, log=lambda m: print(m, file=sys.stderr),
                                        source_dir=SELFTEST_DIR, library=SELFTEST_LIBRARY, portable_switch=portable)
    loaded = EmulatedLibrary(path)
    for name, argtypes in SIGNATURES.items():
        fn = getattr(loaded.lib, name)
        fn.argtypes, fn.restype = argtypes, c_int
    return loaded


@pytest.fixture
def call(emu):
    """call(name, *args) -> (status, the emulator's error text), from a cleared error state."""

    def run(name, *args):
        emu.clear_error()
        status = getattr(emu.lib, name)(*args)
        return status, emu.error()

    return run


def test_a_correct_kernel_gives_the_right_sums_under_both_schedules(emu, call, rng):
    n = 1000  # four blocks, the last one part-full
    x = emu.tensor(torch.randn(n, generator=rng))
    want = x.double().view(-1)[: n].tolist()
    want = [sum(want[b * 256:(b + 1) * 256]) for b in range(4)]
    for descending in (False, True):
        out = emu.empty((4,), torch.float32)
        emu.set_schedule(descending)
        try:
            assert call("selftest_block_sum", x.data_ptr(), out.data_ptr(), n) == (0, "")
        finally:
            emu.set_schedule(False)
        assert out.tolist() == pytest.approx(want, rel=1e-5, abs=1e-4)
    assert emu.guard_violations() == []


def test_a_missing_barrier_gives_different_results_under_the_two_schedules(emu, call, rng):
    right = []
    for descending in (False, True):
        # fresh values each run: the read that races sees what the previous run left in shared memory
        x = emu.tensor(torch.randn(256, generator=rng))
        out = emu.empty((256,), torch.float32)
        emu.set_schedule(descending)
        try:
            assert call("selftest_missing_barrier", x.data_ptr(), out.data_ptr()) == (0, "")
        finally:
            emu.set_schedule(False)
        right.append(set((out == torch.roll(x, -1)).nonzero().view(-1).tolist()))
    # ascending, thread t reads s[t + 1] before thread t + 1 writes it (only thread 255's s[0] is written);
    # descending, the other way round (only thread 255 reads too early)
    assert right == [{255}, set(range(255))]


def test_a_barrier_some_threads_skip_fails_the_launch(emu, call):
    out = emu.empty((128,), torch.float32)
    status, error = call("selftest_partial_barrier", out.data_ptr())
    assert status == ERR_CUDA
    assert "64 of its 128 threads exited while the others wait at __syncthreads at" in error
    assert "selftestKernels.cu:" in error and "of the kernel launched at" in error


def test_threads_at_different_barriers_fail_the_launch(emu, call):
    out = emu.empty((128,), torch.float32)
    status, error = call("selftest_split_barriers", out.data_ptr())
    assert status == ERR_CUDA
    assert "its threads wait at different __syncthreads: 64 at" in error


def test_a_full_warp_shuffle_in_a_short_warp_fails(emu, call):
    out = emu.empty((48,), torch.float32)
    status, error = call("selftest_short_warp_shuffle", out.data_ptr())
    assert status == ERR_CUDA
    assert "but the warp has only 16 lanes (the block has 48 threads)" in error


def test_a_full_warp_shuffle_with_exited_lanes_fails(emu, call):
    out = emu.empty((32,), torch.float32)
    status, error = call("selftest_exited_lane_shuffle", out.data_ptr())
    assert status == ERR_CUDA
    assert "but lane 16 has exited" in error


def test_dynamic_shared_memory_bounds_and_opt_in(emu, call):
    assert call("selftest_shared_store", 64, 0, 15) == (0, "")  # the last float of 64 bytes
    status, error = call("selftest_shared_store", 64, 0, 16)  # one past it
    assert status == ERR_CUDA and "wrote past the end of its 64 bytes of dynamic shared memory" in error
    status, error = call("selftest_shared_store", 64 * 1024, 0, 0)  # above 48 KiB without opting in
    assert status == ERR_CUDA and "65536 bytes of dynamic shared memory, above the 49152 the kernel opted in" in error
    assert call("selftest_shared_store", 64 * 1024, 64 * 1024, 0) == (0, "")
    status, error = call("selftest_shared_store", 64 * 1024, 128 * 1024, 0)  # above what sm_86/sm_89 allow
    assert status == ERR_CUDA and "above the 101376 that sm_86 and sm_89 allow" in error


def test_launch_shapes_a_device_refuses(emu, call):
    out = emu.empty((1,), torch.float32)
    assert call("selftest_launch_shape", 3, 2, 1024, out.data_ptr()) == (0, "")
    status, error = call("selftest_launch_shape", 1, 1, 2048, out.data_ptr())
    assert status == ERR_CUDA and "block (2048, 1, 1) is not 1 to 1024 threads" in error
    status, error = call("selftest_launch_shape", 1, 70000, 32, out.data_ptr())
    assert status == ERR_CUDA and "grid (1, 70000, 1) is outside" in error


def test_a_write_just_past_a_buffer_is_reported(emu, call):
    out = emu.empty((5,), torch.float32)  # 20 bytes: element 5 lies in the slack before the guard page
    assert call("selftest_store_at", out.data_ptr(), 4) == (0, "")
    assert emu.guard_violations() == []
    assert call("selftest_store_at", out.data_ptr(), 5) == (0, "")
    assert [v for v in emu.guard_violations() if "float32 [5]" in v]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ldmatrix_and_mma_multiply(emu, call, rng, dtype):
    """A 16×16 by 16×8 product through shared memory, ldmatrix and mma.sync, addressed as the attnx kernels
    address them, equals the product of the rounded inputs (exact products, float32 sums)."""
    a = emu.tensor(torch.randn(16, 16, generator=rng).to(dtype))
    b = emu.tensor(torch.randn(16, 8, generator=rng).to(dtype))
    c = emu.empty((16, 8), torch.float32)
    assert call("selftest_mma_product", a.data_ptr(), b.data_ptr(), c.data_ptr(), int(dtype == torch.bfloat16)) == (0, "")
    assert torch.allclose(c.double(), a.double() @ b.double(), rtol=1e-6, atol=1e-5)


def test_tf32_mma_multiplies_inputs_rounded_to_tf32(emu, call, rng):
    a = emu.tensor(torch.randn(16, 8, generator=rng))
    b = emu.tensor(torch.randn(8, 8, generator=rng))
    c = emu.empty((16, 8), torch.float32)
    assert call("selftest_mma_product_tf32", a.data_ptr(), b.data_ptr(), c.data_ptr()) == (0, "")
    exact = a.double() @ b.double()
    assert torch.allclose(c.double(), exact, rtol=5e-3, atol=5e-3)  # tf32 keeps 10 bits of mantissa
    assert not torch.allclose(c.double(), exact, rtol=1e-6, atol=1e-6)  # and is not float32


def test_cp_async_lands_only_when_waited_for(emu, call, rng):
    src = emu.tensor(torch.randn(4, generator=rng))
    out = emu.empty((4,), torch.float32)
    assert call("selftest_async_copy", src.data_ptr(), out.data_ptr(), 1) == (0, "")
    assert torch.equal(out, src)
    assert call("selftest_async_copy", src.data_ptr(), out.data_ptr(), 0) == (0, "")
    assert torch.isnan(out).all()  # read before the copy landed: the NaN fill of shared memory


def test_a_misaligned_ldmatrix_fails_the_launch(emu, call):
    out = emu.empty((32,), torch.float32)
    status, error = call("selftest_misaligned_ldmatrix", out.data_ptr())
    assert status == ERR_CUDA and "ldmatrix: lane 0's row address" in error and "is not 16-byte aligned" in error


def test_lanes_at_different_warp_instructions_fail_the_launch(emu, call):
    out = emu.empty((32,), torch.float32)
    status, error = call("selftest_split_shuffles", out.data_ptr())
    assert status == ERR_CUDA
    assert "waits at the full-warp __shfl_xor_sync at" in error and "but lane 16 waits at the __shfl_xor_sync at" in error


def test_an_unwritten_output_reads_as_nan(emu):
    assert torch.isnan(emu.empty((3, 7), torch.float16)).all()
    assert torch.isnan(emu.empty((9,), torch.bfloat16)).all()


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


def _child_call(lib: Path, body: str) -> subprocess.CompletedProcess:
    return _child("import ctypes, torch\n"
                  "from attnx.plugins.emulation import EmulatedLibrary\n"
                  f"emu = EmulatedLibrary({str(lib)!r})\n" + body)


def test_a_read_past_a_buffer_ends_the_process_naming_the_thread(emu):
    proc = _child_call(emu.path, "x = emu.empty((16,), torch.float32)\n"
                                 "out = emu.empty((1,), torch.float32)\n"
                                 "emu.lib.selftest_load_at.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64]\n"
                                 "emu.lib.selftest_load_at(x.data_ptr(), out.data_ptr(), 16 + 200)\n"
                                 "print('still alive')\n")
    assert proc.returncode != 0 and "still alive" not in proc.stdout
    assert "attnx emulator: invalid memory access at" in proc.stderr
    assert "by thread (0, 0, 0) of block (0, 0, 0) of the kernel launched at" in proc.stderr
    assert "selftestKernels.cu:" in proc.stderr and "(800 bytes past the end of the 64-byte buffer at" in proc.stderr


def test_an_emulated_thread_that_overflows_its_stack_is_named(emu):
    proc = _child_call(emu.path, "out = emu.empty((32,), torch.float32)\n"
                                 "emu.lib.selftest_deep_stack.argtypes = [ctypes.c_void_p]\n"
                                 "emu.lib.selftest_deep_stack(out.data_ptr())\n"
                                 "print('still alive')\n")
    assert proc.returncode != 0 and "still alive" not in proc.stdout
    assert "(the emulated thread overflowed its stack)" in proc.stderr


def test_a_library_without_the_emulator_is_refused(tmp_path):
    with pytest.raises(BackendUnavailableError, match="cannot load the emulated kernel library"):
        EmulatedLibrary(tmp_path / "missing.so")
    with pytest.raises(BackendUnavailableError, match="is not an emulated kernel library: it has no attnx_emu_alloc"):
        EmulatedLibrary(ctypes.util.find_library("c"))
