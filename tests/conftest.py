import sys
from pathlib import Path

import pytest
import torch

from attnx.exporters import export
from attnx.models import load_model
from helpers.build import (EMULATED_TEST_BUILD_DIR, PLUGIN_TEST_ARCHS, PLUGIN_TEST_BUILD_DIR, REPO,
                           require_cmake_and_nvcc)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export a zoo model once per (name, dtype, opset) for the whole session: (LoadedModel, path)."""
    cache = {}

    def get(name, dtype="fp32", opset=18):
        key = (name, dtype, opset)
        if key not in cache:
            loaded = load_model(name)
            path = tmp_path_factory.mktemp("onnx") / f"{name}-{dtype}-{opset}.onnx"
            export(loaded, path, dtype=dtype, opset=opset)
            cache[key] = (loaded, path)
        return cache[key]

    return get


@pytest.fixture
def rng():
    """A freshly seeded generator per test; the seed is printed, so a failure shows it."""
    seed = torch.seed() % 2**31
    print(f"random seed: {seed}")
    return torch.Generator().manual_seed(seed)




@pytest.fixture(scope="session")
def gpu_check():
    """tools/gpu_check.py as a module (tools/ is scripts, not a package)."""
    tools = str(REPO / "tools")
    sys.path.insert(0, tools)
    try:
        import gpu_check as module
    finally:
        sys.path.remove(tools)
    return module


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


@pytest.fixture(scope="session")
def plugin_lib() -> Path:
    """libattnx_plugins.so built once per session into build/trt_plugins-tests (CMake rebuilds only what
    changed since the last run there); only a machine without cmake or nvcc skips, saying so."""
    from attnx.plugins import build

    require_cmake_and_nvcc("the plugin library")
    return build.build_library(PLUGIN_TEST_ARCHS, out_dir=PLUGIN_TEST_BUILD_DIR, log=_log)


@pytest.fixture(scope="session")
def emulated_kernels() -> Path:
    """libattnx_kernels_emulated.so (the kernels on the CPU emulator) built once per session into
    build/kernels-emulated-tests; skips, saying why, without cmake or the CUDA toolkit."""
    from attnx.plugins import build

    require_cmake_and_nvcc("the emulated kernels")
    return build.build_emulated_kernels(EMULATED_TEST_BUILD_DIR, log=_log)
