"""timm without torchvision (a copy of the tests' stand-in; attnx does not import the tests).

timm imports torchvision at import time for one class (FrozenBatchNorm2d, used by no ViT). PyPI's
torchvision is a CUDA build that cannot be imported beside the CPU torch, so where torchvision does
not import, `import_timm` stands in a module whose every name refuses to be built or called.
"""

from __future__ import annotations

import sys
import types


class _AbsentName(type):
    """A torchvision name timm reads at import: a class that refuses to be built or called, whose own
    attributes (enum members such as InterpolationMode.NEAREST) are such classes too."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AbsentName(f"{cls.__name__}.{name}", (), {})

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"torchvision's {cls.__name__} is used, and torchvision is not importable here")


class _Absent(types.ModuleType):
    """A stand-in for a torchvision module: every name in it is an `_AbsentName`."""

    __path__: list = []  # a package, so that `import torchvision.x.y` finds its submodules here

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AbsentName(f"{self.__name__}.{name}", (), {})


class _AbsentFinder:
    """Finds every torchvision.* module as an `_Absent` one."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        import importlib.machinery
        if name != "torchvision" and not name.startswith("torchvision."):
            return None
        return importlib.machinery.ModuleSpec(name, _AbsentFinder)

    @staticmethod
    def create_module(spec):
        return _Absent(spec.name)

    @staticmethod
    def exec_module(module):
        pass


def import_timm():
    """timm, importable without torchvision (see the module docstring)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or PyPI's CUDA build failing beside the CPU torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        if _AbsentFinder not in sys.meta_path:
            sys.meta_path.insert(0, _AbsentFinder)
    import timm
    return timm
