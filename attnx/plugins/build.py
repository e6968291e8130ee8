"""Build libattnx_plugins.so from trt_plugins/ with CMake and nvcc, and the kernels' CPU emulation.

`build_library()` provisions the TensorRT headers (headers.py), configures and builds, and
returns the library's path. The sources are the checkout's trt_plugins/ when attnx runs from one (an
editable install), else the copy a wheel carries as attnx/_trt_plugins (setup.py puts it there). The
default output is `build/trt_plugins/` in a checkout (ignored by git), else a per-user cache folder,
`$XDG_CACHE_HOME/attnx/trt_plugins-<version>` (`~/.cache/...` without it), since site-packages is no
place to build in; `library.default_library_path()` looks there. Configuring runs codegen.py with this
interpreter (CMake's ATTNX_PYTHON): the plugins' field layer is generated from the op registry into
the build folder's attnx_generated/, never into the sources.

Builds into one folder take turns (a lock on the folder; a second build says it is waiting), and
CMake links the library into the folder's `.attnx-link/`, from where it lands at `<folder>/<library>`
whole (attnx.files): a process loading the library never sees a half-linked file.

`build_emulated_kernels()` builds trt_plugins/emulation: the same kernel sources compiled by the
host compiler onto the CPU emulator (`libattnx_kernels_emulated.so`, for `tools/gpu_check.py
--emulate`); it needs CUDA's headers but not nvcc's device compilation, a GPU or TensorRT.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from attnx import __version__
from attnx.errors import BackendUnavailableError, AttnxError
from attnx.files import atomic_output, check_output_folder, folder_lock
from attnx.plugins import headers

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the attnx package: the checkout's, or site-packages'
PACKAGED_SOURCES = "_trt_plugins"  # where a wheel carries trt_plugins/, in the attnx package (setup.py)
# the repository attnx runs from, or None when it is installed from a wheel
CHECKOUT_ROOT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "trt_plugins" / "CMakeLists.txt").is_file() else None
SOURCE_DIR = CHECKOUT_ROOT / "trt_plugins" if CHECKOUT_ROOT is not None else PACKAGE_DIR / PACKAGED_SOURCES
LIBRARY_NAME = "libattnx_plugins.so"
EMULATION_SOURCE_DIR = SOURCE_DIR / "emulation"
DEFAULT_ARCHS = ("80", "86", "87", "89", "90")
MIN_ARCH = 80
NVCC_CANDIDATES = ("/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc")
LINK_DIR = ".attnx-link"  # in the build folder: where CMake links, before the library lands


class BuildError(AttnxError):
    """CMake configure or build of the plugin library failed."""


def default_folder(name: str) -> Path:
    """`build/<name>` in a checkout, else `<user cache>/attnx/<name>-<version>` (headers.cache_root)."""
    if CHECKOUT_ROOT is not None:
        return CHECKOUT_ROOT / "build" / name
    return headers.cache_root() / f"{name}-{__version__}"


def default_build_dir() -> Path:
    """Where `attnx plugins build` builds, and the library is looked for, by default."""
    return default_folder("trt_plugins")


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
        if int(a) < MIN_ARCH:
            raise BuildError(f"CUDA architecture sm_{a} is older than the plugins need: sm_{MIN_ARCH} or newer "
                             "(cp.async, bfloat16 tensor cores, 99 KiB of shared memory per block)")
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


def _require_sources(source_dir: Path) -> None:
    if not (source_dir / "CMakeLists.txt").is_file():
        raise BuildError(f"the plugin sources are not here: expected {source_dir / 'CMakeLists.txt'}, which a "
                         f"checkout has in trt_plugins/ and a wheel installs as attnx/{PACKAGED_SOURCES}/; this attnx "
                         f"({PACKAGE_DIR}) has neither: reinstall it from a wheel or a clone")


def _cmake_build(cmake: str, source_dir: Path, out: Path, defines: list[str], library: str,
                 log: Callable[[str], None], jobs: int | None) -> Path:
    """Configure `source_dir` into `out` with `defines` (and this interpreter as ATTNX_PYTHON, which
    generates the field layer), build, land the library atomically and return `out/library`.

    One build at a time per folder: the folder is locked for the whole configure, build and landing."""
    with folder_lock(out, lambda message: log(f"[attnx] {message}")):
        start = time.monotonic()
        link_dir = out.resolve() / LINK_DIR  # CMake reads a relative path against the build folder
        _run([cmake, "-S", str(source_dir), "-B", str(out), *defines, f"-DATTNX_PYTHON={sys.executable}",
              f"-DATTNX_PACKAGE_DIR={PACKAGE_DIR}",
              f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={link_dir}", "-DCMAKE_BUILD_TYPE=Release"], log, "cmake configure")
        _run([cmake, "--build", str(out), "-j", str(jobs or os.cpu_count() or 2)], log, "cmake build")
        linked = link_dir / library
        if not linked.is_file():
            raise BuildError(f"the build finished but {linked} does not exist")
        lib = out / library
        with atomic_output(lib) as staged:  # copied, not moved: the next build stays incremental
            shutil.copy2(linked, staged)
        log(f"[attnx] built {lib} in {time.monotonic() - start:.1f} s")
        return lib


def build_library(archs: Sequence[str | int] = DEFAULT_ARCHS, out_dir: str | Path | None = None,
                  log: Callable[[str], None] = print, jobs: int | None = None) -> Path:
    """Configure and build the plugin library; returns the path of libattnx_plugins.so.

    The arguments are checked before the tools are looked for: a bad architecture or folder says so
    even where CMake or nvcc is missing."""
    arch_list = _normalise_archs(archs)
    out = check_output_folder(out_dir if out_dir is not None else default_build_dir(), "plugin build folder")
    _require_sources(SOURCE_DIR)
    cmake = find_cmake()
    nvcc = find_nvcc()
    inc = headers.include_dir(log)
    log(f"[attnx] building {LIBRARY_NAME} for sm_{', sm_'.join(arch_list)} in {out} (TensorRT headers: {inc})")
    return _cmake_build(cmake, SOURCE_DIR, out, [f"-DTRT_INCLUDE_DIR={inc}",
                                          f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(arch_list)}",
                                          f"-DCMAKE_CUDA_COMPILER={nvcc}"], LIBRARY_NAME, log, jobs)


def build_emulated_kernels(out_dir: str | Path | None = None, log: Callable[[str], None] = print,
                           jobs: int | None = None, source_dir: str | Path = EMULATION_SOURCE_DIR,
                           library: str = "libattnx_kernels_emulated.so", portable_switch: bool = False) -> Path:
    """Build the kernels onto the CPU emulator (trt_plugins/emulation) and return the library's path.

    `source_dir` and `library` name another project built with AttnxEmulation.cmake (the emulator's
    own tests); `portable_switch` makes the emulator switch fibers with ucontext, as it does off
    x86-64, where it otherwise has its own register switch. CUDA's headers come from nvcc's toolkit
    (CMake's FindCUDAToolkit, told which nvcc); nothing is compiled for a GPU."""
    source_dir = Path(source_dir)
    _require_sources(source_dir)
    out = check_output_folder(out_dir if out_dir is not None else default_folder("kernels-emulated"),
                              "emulated kernels' build folder")
    cmake = find_cmake()
    nvcc = find_nvcc()
    log(f"[attnx] building {library} (the kernels on the CPU emulator) in {out} (CUDA headers of {nvcc})")
    defines = [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DATTNX_EMU_UCONTEXT={'ON' if portable_switch else 'OFF'}"]
    return _cmake_build(cmake, source_dir, out, defines, library, log, jobs)
