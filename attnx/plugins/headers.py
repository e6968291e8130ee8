"""TensorRT public API headers for building the plugin library.

A real TensorRT install wins: `$TENSORRT_ROOT/include`, then the system include dirs. PyPI's
TensorRT wheels carry no headers, so otherwise the headers come from a pinned PyPI wheel that
bundles TensorRT 10.14's public API headers (`kernel-lens==2.0.1`), checked by sha256 and
unpacked into a cache dir outside the repository (headers are never copied into the tree).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from attnx.errors import BackendUnavailableError

WHEEL_REQUIREMENT = "kernel-lens==2.0.1"
WHEEL_FILE = "kernel_lens-2.0.1-py3-none-any.whl"
WHEEL_SHA256 = "07cc714e8b5e7f34b672f7c7fad93febe7c747be5837ba276b1527370134ffe0"
WHEEL_HEADER_PREFIX = "kernel_lens/include/tensorrt/"
SYSTEM_INCLUDE_DIRS = ("/usr/include", "/usr/include/x86_64-linux-gnu", "/usr/local/include")


class HeaderError(BackendUnavailableError):
    """TensorRT headers could not be found or provisioned."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attnx"


def installed_include_dir() -> Path | None:
    """The include dir of a real TensorRT install, or None."""
    root = os.environ.get("TENSORRT_ROOT")
    if root:
        inc = Path(root) / "include"
        if (inc / "NvInfer.h").is_file():
            return inc
        raise HeaderError(f"TENSORRT_ROOT={root} is set but {inc / 'NvInfer.h'} does not exist; "
                          "point TENSORRT_ROOT at a TensorRT install (with include/NvInfer.h) or unset it")
    for d in SYSTEM_INCLUDE_DIRS:
        if (Path(d) / "NvInfer.h").is_file():
            return Path(d)
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(dest: Path, log=print) -> Path:
    wheel = dest / WHEEL_FILE
    if not wheel.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        log(f"[attnx] downloading {WHEEL_REQUIREMENT} (TensorRT API headers) into {dest}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               WHEEL_REQUIREMENT, "-d", str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            raise HeaderError(
                f"no TensorRT headers installed (looked for TENSORRT_ROOT and NvInfer.h in "
                f"{', '.join(SYSTEM_INCLUDE_DIRS)}) and `{' '.join(cmd)}` failed:\n{proc.stderr.strip()[-2000:]}")
    found = _sha256(wheel)
    if found != WHEEL_SHA256:
        raise HeaderError(f"{wheel}: sha256 {found} does not equal the pinned {WHEEL_SHA256}; refusing to use "
                          f"its headers (delete the file to download it again)")
    return wheel


def provisioned_include_dir(log=print) -> Path:
    """Headers unpacked from the pinned wheel into the cache; downloaded and checked on first use."""
    root = cache_root()
    inc = root / "trt-headers-10.14"
    if (inc / "NvInfer.h").is_file() and (inc / ".sha256").is_file() \
            and (inc / ".sha256").read_text().strip() == WHEEL_SHA256:
        return inc
    wheel = _download_wheel(root / "wheels", log)
    # unpack beside the target and rename into place, so a concurrent build (two test sessions)
    # never sees half a header set
    tmp = Path(tempfile.mkdtemp(prefix="trt-headers-10.14.", dir=root))
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(WHEEL_HEADER_PREFIX) and n.endswith(".h")]
        if not any(n.endswith("/NvInfer.h") for n in names):
            shutil.rmtree(tmp)
            raise HeaderError(f"{wheel} has no {WHEEL_HEADER_PREFIX}NvInfer.h; found {len(names)} headers there")
        for n in names:
            (tmp / Path(n).name).write_bytes(zf.read(n))
    (tmp / ".sha256").write_text(WHEEL_SHA256 + "\n")
    if inc.exists():
        shutil.rmtree(inc)  # a stale or foreign copy: its .sha256 did not match the pin
    try:
        tmp.rename(inc)
    except OSError:
        shutil.rmtree(tmp)  # another process put a checked copy there first
        if not (inc / ".sha256").is_file() or (inc / ".sha256").read_text().strip() != WHEEL_SHA256:
            raise
    log(f"[attnx] TensorRT headers from {WHEEL_REQUIREMENT} in {inc}")
    return inc


def include_dir(log=print) -> Path:
    """The directory holding NvInfer.h: a real install if there is one, else the provisioned copy."""
    return installed_include_dir() or provisioned_include_dir(log)
