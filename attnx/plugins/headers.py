"""TensorRT public API headers for building the plugin library.

A real TensorRT install wins: `$TENSORRT_ROOT/include`, then the system include dirs. PyPI's
TensorRT wheels carry no headers, so otherwise the headers come from a pinned PyPI wheel that
bundles TensorRT 10.14's public API headers (`kernel-lens==2.0.1`), checked by sha256 and
unpacked into a cache dir outside the repository (headers are never copied into the tree). The
unpack writes a manifest of every file's sha256 and lands whole (a temporary folder renamed into
place); before each build the cache is checked against it file by file, and any difference
re-provisions it from the wheel, saying so.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
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
CACHE_NAME = "trt-headers-10.14"
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


MANIFEST = ".manifest.json"


def _cache_mismatch(inc: Path) -> str | None:
    """Why the unpacked cache `inc` is not what the pinned wheel unpacked (None when it is): its
    manifest, written last at unpack time, names the wheel's sha256 and every file's sha256."""
    if not inc.exists():
        return "it does not exist"
    if not inc.is_dir():
        return "it is not a folder"
    try:
        manifest = json.loads((inc / MANIFEST).read_text())
        wheel, files = manifest["wheel_sha256"], manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its manifest {inc / MANIFEST} is missing or unreadable"
    if wheel != WHEEL_SHA256 or not isinstance(files, dict):
        return f"its manifest is for wheel sha256 {wheel}, not the pinned {WHEEL_SHA256}"
    present = {p.name for p in inc.iterdir()} - {MANIFEST}
    if present - files.keys():
        return f"it holds files the wheel did not unpack: {', '.join(sorted(present - files.keys()))}"
    if files.keys() - present:
        return f"files the wheel unpacked are missing: {', '.join(sorted(files.keys() - present))}"
    for name in sorted(files):
        path = inc / name
        if not path.is_file() or path.is_symlink():
            return f"{name} is not a plain file"
        found = _sha256(path)
        if found != files[name]:
            return f"{name} has sha256 {found}, its manifest says {files[name]}"
    return None


def _unpack(wheel: Path, root: Path) -> Path:
    """The wheel's headers and their manifest in a fresh folder beside the cache, not yet in place."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{CACHE_NAME}.unpacking.", dir=root))
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.startswith(WHEEL_HEADER_PREFIX) and n.endswith(".h")]
            if not any(n.endswith("/NvInfer.h") for n in names):
                raise HeaderError(f"{wheel} has no {WHEEL_HEADER_PREFIX}NvInfer.h; found {len(names)} headers there")
            files = {}
            for n in names:
                data = zf.read(n)
                # written now, so newer than any object compiled from a copy this one replaces
                (tmp / Path(n).name).write_bytes(data)
                files[Path(n).name] = hashlib.sha256(data).hexdigest()
        # the manifest last: a folder without one is never taken for a cache
        (tmp / MANIFEST).write_text(json.dumps({"wheel_sha256": WHEEL_SHA256, "files": files}, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def provisioned_include_dir(log=print) -> Path:
    """Headers unpacked from the pinned wheel into the cache, checked file by file against the
    manifest written when they were unpacked; a cache that differs in any file is replaced from the
    (sha256-checked) wheel, saying so. Downloaded on first use."""
    root = cache_root()
    inc = root / CACHE_NAME
    root.mkdir(parents=True, exist_ok=True)
    # one process at a time checks and replaces the cache (two test sessions building at once)
    with open(root / f"{CACHE_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        why = _cache_mismatch(inc)
        if why is None:
            return inc
        if inc.exists():
            log(f"[attnx] TensorRT header cache {inc} does not match what {WHEEL_REQUIREMENT} unpacked ({why}); "
                f"re-provisioning it from the wheel")
        # folders of an unpack that was killed: under the lock no live one exists
        for stale in root.glob(f"{CACHE_NAME}.unpacking.*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.glob(f"{CACHE_NAME}.replaced.*"):
            shutil.rmtree(stale, ignore_errors=True)
        wheel = _download_wheel(root / "wheels", log)
        tmp = _unpack(wheel, root)
        # rename the old cache aside and the new one into place: at every moment the cache path is
        # either absent or a complete, manifested copy
        if inc.exists() or inc.is_symlink():
            aside = Path(tempfile.mkdtemp(prefix=f"{CACHE_NAME}.replaced.", dir=root))
            inc.rename(aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        tmp.rename(inc)
    log(f"[attnx] TensorRT headers from {WHEEL_REQUIREMENT} in {inc}")
    return inc


def include_dir(log=print) -> Path:
    """The directory holding NvInfer.h: a real install if there is one, else the provisioned copy."""
    return installed_include_dir() or provisioned_include_dir(log)
