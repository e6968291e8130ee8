"""Build libattnx_plugins.so from trt_plugins/ with CMake and nvcc.

`build_library()` provisions the TensorRT headers (headers.py), configures and builds, and
returns the library's path. The default output is `build/trt_plugins/` in the repository
(ignored by git); `library.default_library_path()` looks there.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from attnx.errors import BackendUnavailableError, AttnxError
from attnx.plugins import headers

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO_ROOT / "trt_plugins"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "trt_plugins"
LIBRARY_NAME = "libattnx_plugins.so"
DEFAULT_ARCHS = ("80", "86", "87", "89", "90")
NVCC_CANDIDATES = ("/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc")


class BuildError(AttnxError):
    """CMake configure or build of the plugin library failed."""


def find_cmake() -> str:
    found = shutil.which("cmake")
    if not found:
        raise BackendUnavailableError("cmake not found on PATH; building the plugin library needs CMake >= 3.25")
    return found


def find_nvcc() -> str:
    """nvcc from CUDACXX, PATH, or the usual install places."""
    looked = []
    env = os.environ.get("CUDACXX")
    if env:
        if Path(env).is_file():
            return env
        looked.append(f"CUDACXX={env}")
    on_path = shutil.which("nvcc")
    if on_path:
        return on_path
    looked.append("nvcc on PATH")
    for cand in NVCC_CANDIDATES:
        if Path(cand).is_file():
            return cand
        looked.append(cand)
    raise BackendUnavailableError("nvcc not found (looked for " + ", ".join(looked)
                                  + "); building the plugin library needs the CUDA toolkit")


def _normalise_archs(archs: Sequence[str | int]) -> list[str]:
    out = []
    for a in archs:
        a = str(a).strip().lower().removeprefix("sm_").removeprefix("sm")
        if not a.isdigit() or not 50 <= int(a) <= 129:
            raise BuildError(f"CUDA architecture {a!r} is not a compute capability like 87 or 90")
        out.append(a)
    if not out:
        raise BuildError("no CUDA architectures given; expected e.g. 87,90")
    return out


def _run(cmd: list[str], log: Callable[[str], None], what: str, heartbeat_s: float = 15.0) -> None:
    """Run `cmd`, logging CMake's progress lines and errors; while a step prints nothing (nvcc on one
    .cu file for several architectures takes a minute), a line every `heartbeat_s` says it is alive."""
    log("[attnx] $ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    tail: list[str] = []
    start = time.monotonic()
    while True:
        try:
            line = lines.get(timeout=heartbeat_s)
        except queue.Empty:
            log(f"[attnx]   ... {what} still running ({time.monotonic() - start:.0f} s)")
            continue
        if line is None:
            break
        tail = (tail + [line])[-60:]
        # CMake's "[ 50%] Building CUDA object ..." lines are the progress worth showing
        if line.startswith("[") or "error" in line.lower():
            log("[attnx]   " + line)
    if proc.wait() != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}); last output:\n" + "\n".join(tail))


def build_library(archs: Sequence[str | int] = DEFAULT_ARCHS, out_dir: str | Path | None = None,
                  log: Callable[[str], None] = print, jobs: int | None = None) -> Path:
    """Configure and build the plugin library; returns the path of libattnx_plugins.so."""
    if not (SOURCE_DIR / "CMakeLists.txt").is_file():
        raise BuildError(f"the plugin sources are not here: expected {SOURCE_DIR / 'CMakeLists.txt'} (build the "
                         "library from a clone of the repository, where attnx is installed with `pip install -e .`)")
    cmake = find_cmake()
    nvcc = find_nvcc()
    arch_list = _normalise_archs(archs)
    inc = headers.include_dir(log)
    out = Path(out_dir) if out_dir is not None else DEFAULT_BUILD_DIR
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    log(f"[attnx] building {LIBRARY_NAME} for sm_{', sm_'.join(arch_list)} in {out} (TensorRT headers: {inc})")
    _run([cmake, "-S", str(SOURCE_DIR), "-B", str(out), f"-DTRT_INCLUDE_DIR={inc}",
          f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(arch_list)}", f"-DCMAKE_CUDA_COMPILER={nvcc}",
          "-DCMAKE_BUILD_TYPE=Release"], log, "cmake configure")
    _run([cmake, "--build", str(out), "-j", str(jobs or os.cpu_count() or 2)], log, "cmake build")
    lib = out / LIBRARY_NAME
    if not lib.is_file():
        raise BuildError(f"the build finished but {lib} does not exist")
    log(f"[attnx] built {lib} in {time.monotonic() - start:.1f} s")
    return lib
