"""PyTorch modules for every variant and the zoo of tiny end-to-end models.

The zoo is declared without importing torch (its entries build their modules when asked), so that
`attnx zoo` and the CLI's parser list it at once; the module classes load on first use.
"""

import importlib

from attnx.models.zoo import DEFAULT_MODEL, ZOO, LoadedModel, load_model

_HOME = {"LinearAttention": "linear_attention", "SoftmaxAttention": "softmax_attention"}

__all__ = ["DEFAULT_MODEL", "LinearAttention", "LoadedModel", "SoftmaxAttention", "ZOO", "load_model"]


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"attnx.models.{_HOME[name]}"), name)
    raise AttributeError(f"module 'attnx.models' has no attribute {name!r}")
