"""The wheel carries the plugin sources: trt_plugins/ (CMake project, kernels, READMEs) lands in it as
attnx/_trt_plugins, where attnx/plugins/build.py finds them when attnx is not run from a checkout.

An editable install copies nothing: it builds from the checkout's trt_plugins/. Everything else about
the package is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithPluginSources(build_py):
    """build_py, then trt_plugins/ copied into the build as attnx/_trt_plugins."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        dest = Path(self.build_lib) / "attnx" / "_trt_plugins"
        shutil.rmtree(dest, ignore_errors=True)  # a stale copy from an earlier build must not survive
        shutil.copytree(HERE / "trt_plugins", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithPluginSources})
