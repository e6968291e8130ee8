"""What a file records of the model it was exported from, so `check` can tell a different model from
a parity failure.

Two sha256 digests. The architecture: every submodule's name, class and plain settings (ints,
floats, strings, bools and containers of them: `causal`, `feature_map`, the sparse pattern), and
every parameter's and buffer's name, shape and dtype. The weights: every parameter's and
buffer's name and values. linear-tiny and softmax-tiny have the same parameter names and shapes
(and, from one seed, the same values): only the module classes and settings tell them apart.

Files exported before these digests record `attnx.weights_sha256`, the values and shapes in
state_dict order without names (`legacy_weights_sha256`): they are verified by that scheme, which
cannot see the architecture.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

ARCHITECTURE_KEY = "attnx.architecture_sha256"
WEIGHTS_KEY = "attnx.model_weights_sha256"
LEGACY_WEIGHTS_KEY = "attnx.weights_sha256"

_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> Any:
    """`value` if it is plain data (scalars, and lists, tuples and dicts of them), else None."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v) for k, v in value.items()}
        return items if all(items[k] is not None or value[k] is None for k in value) else None
    return None


def _settings(module: nn.Module) -> dict[str, Any]:
    """A module's plain settings: public attributes holding plain data (`training` left out)."""
    settings = {}
    for key, value in sorted(vars(module).items()):
        if key.startswith("_") or key == "training":
            continue
        plain = _plain(value)
        if plain is not None or value is None:
            settings[key] = plain
    return settings


def _tensors(module: nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def architecture_sha256(module: nn.Module) -> str:
    """sha256 of the module tree (names, classes, settings) and of every tensor's name, shape and dtype."""
    tree = [[name, type(sub).__qualname__, _settings(sub)] for name, sub in module.named_modules()]
    tensors = [[name, list(t.shape), str(t.dtype)] for name, t in _tensors(module)]
    text = json.dumps({"modules": tree, "tensors": tensors}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _value_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().cpu()
    return (t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes()


def weights_sha256(module: nn.Module) -> str:
    """sha256 of every parameter's and buffer's name and values."""
    digest = hashlib.sha256()
    for name, tensor in _tensors(module):
        digest.update(name.encode() + b"\0")
        digest.update(_value_bytes(tensor))
    return digest.hexdigest()


def legacy_weights_sha256(module: nn.Module) -> str:
    """The digest files exported before the architecture digest record: values and shapes in
    state_dict order, names left out."""
    digest = hashlib.sha256()
    for tensor in module.state_dict().values():
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(module: nn.Module) -> dict[str, str]:
    """{metadata key: digest} as export records them."""
    return {ARCHITECTURE_KEY: architecture_sha256(module), WEIGHTS_KEY: weights_sha256(module)}
