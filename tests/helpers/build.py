"""Where the tests build the plugin library and the emulated kernels, and when they cannot."""

from pathlib import Path

import pytest

from attnx.errors import BackendUnavailableError

REPO = Path(__file__).resolve().parents[2]
PLUGIN_TEST_BUILD_DIR = REPO / "build" / "trt_plugins-tests"
PLUGIN_TEST_ARCHS = ("87", "90")  # Jetson Orin and Hopper, the two CI must always compile
EMULATED_TEST_BUILD_DIR = REPO / "build" / "kernels-emulated-tests"


def require_cmake_and_nvcc(what: str) -> None:
    """Skip, saying why, where `what` cannot be built: no cmake, or no CUDA toolkit (nvcc, and with it
    CUDA's headers)."""
    from attnx.plugins import build

    try:
        build.find_cmake()
        build.find_nvcc()
    except BackendUnavailableError as exc:
        pytest.skip(f"{what} cannot be built on this machine: {exc}")
