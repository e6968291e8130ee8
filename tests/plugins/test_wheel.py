"""A plain install from the wheel, as a user without a clone has it: the wheel carries the plugin sources
(attnx/_trt_plugins) and the LICENSE, and from a folder outside any checkout `attnx plugins build` builds
into the per-user cache folder, where `attnx plugins info` and `path` then find the library.

The wheel is built from a copy of the checkout's files (tracked, and new ones git does not ignore), so
nothing is written into the shared tree. It is installed into a fresh venv that sees this interpreter's
packages (torch is not reinstalled); the venv's own site-packages comes first, so its attnx is the
wheel's, which the test checks. $XDG_CACHE_HOME points into tmp, holding a copy of the kernel-lens wheel
that provisions the TensorRT headers (test_header_cache.py's `pinned_wheel`), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import attnx
from attnx.plugins import headers
from helpers.build import REPO, require_cmake_and_nvcc

CREATORS = {"LinearAttention", "ReluSquaredAttention", "MixedChunkAttention", "PerformerFeatures", "SparseAttention"}


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _checked(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = _run(cmd, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}, expected 0:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _checkout_files() -> list[str]:
    listed = _checked(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
    return [name for name in listed.stdout.split("\0") if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel` builds from a copy of the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in _checkout_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _checked([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)])
    wheels = list(dist.glob("attnx-*.whl"))
    assert len(wheels) == 1, f"expected one attnx wheel in {dist}, found {[w.name for w in dist.iterdir()]}"
    return wheels[0]


def test_the_wheel_holds_the_plugin_sources_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert licenses, f"no LICENSE in {wheel.name}'s dist-info; it holds {sorted(n for n in names if 'dist-info' in n)}"
        assert "Apache License" in zf.read(licenses[0]).decode() and "Version 2.0" in zf.read(licenses[0]).decode()
    tracked = _checked(["git", "-C", str(REPO), "ls-files", "trt_plugins"]).stdout.split()
    assert "trt_plugins/CMakeLists.txt" in tracked
    expected = {"attnx/_trt_plugins/" + name.removeprefix("trt_plugins/") for name in tracked}
    packaged = {n for n in names if n.startswith("attnx/_trt_plugins/")}
    assert expected <= packaged, f"the wheel lacks plugin sources: {sorted(expected - packaged)}"
    assert not {n for n in packaged if "__pycache__" in n or n.endswith(".pyc")}, "the wheel carries bytecode"


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv (this interpreter's packages visible) with the wheel installed; returns its bin/."""
    root = tmp_path_factory.mktemp("venv")
    _checked([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)])
    _checked([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "-q", "--no-deps",
              "--no-build-isolation", str(wheel)])
    return root / "bin"


@pytest.fixture
def user(tmp_path, venv) -> dict:
    """How the user's commands run: from a folder outside any checkout, the venv's bin/ first on PATH,
    $XDG_CACHE_HOME in tmp with the kernel-lens wheel in it, no $ATTNX_PLUGIN_LIB."""
    wheels = tmp_path / "cache" / "attnx" / "wheels"
    wheels.mkdir(parents=True)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = base / "attnx" / "wheels" / headers.WHEEL_FILE
    if not cached.is_file():
        pytest.skip(f"the pinned kernel-lens wheel is not in {cached.parent}; run tests/plugins/test_header_cache.py "
                    "once with network to fetch it")
    shutil.copyfile(cached, wheels / headers.WHEEL_FILE)
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNX_PLUGIN_LIB", "PYTHONPATH", "XDG_CACHE_HOME")}
    env.update(PATH=f"{venv}{os.pathsep}{env.get('PATH', '')}", XDG_CACHE_HOME=str(tmp_path / "cache"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    return {"cwd": work, "env": env, "bin": venv, "cache": tmp_path / "cache"}


def test_the_venv_runs_the_wheels_attnx_not_the_checkout(user):
    found = _checked([str(user["bin"] / "python"), "-c", "import attnx; print(attnx.__file__)"],
                     cwd=user["cwd"], env=user["env"]).stdout.strip()
    site = _checked([str(user["bin"] / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=user["cwd"], env=user["env"]).stdout.strip()
    assert Path(found).is_relative_to(site), f"the venv imports attnx from {found}, expected it under {site}"
    assert not Path(found).is_relative_to(REPO), f"the venv imports the checkout's attnx ({found})"


def test_a_missing_library_names_the_cache_folder_and_the_build_command(user):
    folder = user["cache"] / "attnx" / f"trt_plugins-{attnx.__version__}"
    proc = _run([str(user["bin"] / "attnx"), "plugins", "path"], cwd=user["cwd"], env=user["env"])
    assert proc.returncode == 2, f"expected exit 2 with no library built, got {proc.returncode}: {proc.stderr}"
    assert str(folder / "libattnx_plugins.so") in proc.stderr and "`attnx plugins build`" in proc.stderr, proc.stderr
    assert "site-packages/build" not in proc.stderr, proc.stderr


def test_plugins_build_from_a_wheel_lands_in_the_user_cache(user):
    require_cmake_and_nvcc("the plugin library")
    attnx_cli = str(user["bin"] / "attnx")
    lib = user["cache"] / "attnx" / f"trt_plugins-{attnx.__version__}" / "libattnx_plugins.so"
    built = _checked([attnx_cli, "plugins", "build", "--arch", "90"], cwd=user["cwd"], env=user["env"], timeout=1800)
    assert built.stdout.strip() == str(lib), f"`plugins build` printed {built.stdout!r}, expected {lib}"
    assert lib.is_file()
    assert "_trt_plugins" in built.stderr, f"the build did not use the wheel's sources:\n{built.stderr}"
    info = json.loads(_checked([attnx_cli, "plugins", "info", "--json"], cwd=user["cwd"], env=user["env"]).stdout)
    assert info["library"] == str(lib)
    assert {c["name"] for c in info["creators"]} == CREATORS
    path = _checked([attnx_cli, "plugins", "path"], cwd=user["cwd"], env=user["env"]).stdout.strip()
    assert path == str(lib)
    assert list(user["cwd"].iterdir()) == [], "the build wrote into the folder it was run from"
