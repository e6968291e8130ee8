"""The attnx kernels on the CPU: a library built by trt_plugins/emulation (the kernels' own sources,
compiled by the host compiler onto a CUDA emulator) loaded through ctypes.

`EmulatedLibrary(path)` exposes the library's C entry points (`.lib`), tensors on page-guarded
buffers to pass them in place of device memory (`empty`, `tensor`), the schedule of a block's
threads between barriers (`set_schedule`), and what the emulator saw go wrong (`error`,
`guard_violations`). trt_plugins/emulation/README.md says what the emulator checks and what only a
GPU can.
"""

from __future__ import annotations

import ctypes
import math
import weakref
from pathlib import Path

from attnx.errors import BackendUnavailableError

LIBRARY_NAME = "libattnx_kernels_emulated.so"


class EmulatedLibrary:
    """A library built with AttnxEmulation.cmake, loaded: its kernels' entry points take the host
    pointers of `empty`/`tensor` tensors and a null stream, and run synchronously."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise BackendUnavailableError(f"cannot load the emulated kernel library {self.path}: {exc}") from exc
        if not hasattr(self.lib, "attnx_emu_alloc"):
            raise BackendUnavailableError(f"{self.path} is not an emulated kernel library: it has no attnx_emu_alloc "
                                          "(build it with trt_plugins/emulation)")
        lib = self.lib
        lib.attnx_emu_alloc.argtypes, lib.attnx_emu_alloc.restype = [ctypes.c_size_t], ctypes.c_void_p
        lib.attnx_emu_free.argtypes, lib.attnx_emu_free.restype = [ctypes.c_void_p], None
        lib.attnx_emu_guards_intact.argtypes, lib.attnx_emu_guards_intact.restype = [ctypes.c_void_p], ctypes.c_int
        lib.attnx_emu_set_schedule.argtypes, lib.attnx_emu_set_schedule.restype = [ctypes.c_int], None
        lib.attnx_emu_error.argtypes, lib.attnx_emu_error.restype = [], ctypes.c_char_p
        lib.attnx_emu_clear_error.argtypes, lib.attnx_emu_clear_error.restype = [], None
        self._live: dict[int, str] = {}  # buffer address -> what it holds, for guard reports

    def empty(self, shape, dtype):
        """A torch tensor of `shape` and `dtype` on a guarded buffer, every byte 0xff (NaN)."""
        import torch

        shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        address = self.lib.attnx_emu_alloc(nbytes)
        if not address:
            raise MemoryError(f"attnx_emu_alloc could not map {nbytes} bytes")
        storage = (ctypes.c_uint8 * max(nbytes, 1)).from_address(address)
        t = torch.frombuffer(storage, dtype=torch.uint8)[:nbytes].view(dtype).view(shape)
        self._live[address] = f"{str(dtype).removeprefix('torch.')} {list(shape)}"
        weakref.finalize(storage, self._free, address)
        return t

    def tensor(self, t):
        """A copy of `t` on a guarded buffer."""
        out = self.empty(t.shape, t.dtype)
        out.copy_(t)
        return out

    def _free(self, address: int) -> None:
        self._live.pop(address, None)
        self.lib.attnx_emu_free(address)

    def guard_violations(self) -> list[str]:
        """The live buffers whose surrounding slack something wrote to (a write just past an end)."""
        return [f"a write just outside the {what} buffer at {address:#x}" for address, what in self._live.items()
                if self.lib.attnx_emu_guards_intact(address) != 1]

    def set_schedule(self, descending: bool) -> None:
        """Run each block's threads in descending (True) or ascending thread order between barriers."""
        self.lib.attnx_emu_set_schedule(int(descending))

    def error(self) -> str:
        """The emulator's first launch failure since `clear_error`, or ""."""
        return self.lib.attnx_emu_error().decode()

    def clear_error(self) -> None:
        self.lib.attnx_emu_clear_error()
