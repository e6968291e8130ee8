"""The model zoo: small deterministic end-to-end models, and loading a model by name.

A model reference is a zoo name (`linear-tiny`) or `path/file.py:factory`, where `factory()`
returns `(module, example_inputs)`. Inputs are `[B, N, ...]`: dim 0 is the batch and dim 1
the sequence, both exported as dynamic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from attnx.errors import ModelNotFoundError
from attnx.models.linear_attention import LinearAttention
from attnx.models.softmax_attention import SoftmaxAttention
from attnx.models.tiny_lm import TinyLM

DEFAULT_MODEL = "linear-tiny"


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    build: Callable[[], nn.Module]
    seed: int = 0

    def create(self) -> nn.Module:
        """The module with weights drawn from the entry's seed, without touching global RNG state."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.build().eval()


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("softmax-tiny", "causal LM, 2 blocks, 4 heads, softmax attention with the log-n scale (n_train 512)",
             lambda: TinyLM(lambda d: SoftmaxAttention(d, 4, causal=True, scale_mode="log_n", n_train=512))),
    ZooEntry("linear-tiny", "causal LM, 2 blocks, 4 heads, linear attention (elu+1, normalised, chunk 64)",
             lambda: TinyLM(lambda d: LinearAttention(d, 4, causal=True, feature_map="elu", chunk_size=64))),
)}


@dataclasses.dataclass
class LoadedModel:
    """A model ready to export or check: module in eval mode and example inputs `[B, N, ...]`."""

    name: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    output_names: list[str] | None = None
    # per input, {axis: dimension name} of the axes exported as dynamic; None: `[B, N, ...]`
    dynamic_axes: tuple[dict[int, str], ...] | None = None
    input_names_override: list[str] | None = None

    def axes(self) -> tuple[dict[int, str], ...]:
        """The dynamic axes of every input: declared, or batch at dim 0 and seq at dim 1."""
        if self.dynamic_axes is not None:
            return self.dynamic_axes
        return tuple({0: "batch", 1: "seq"} if t.dim() >= 2 else {0: "batch"} for t in self.example_inputs)

    def fingerprint(self) -> str:
        """sha256 of the weights' values and shapes in state_dict order (names left out, so a
        wrapper such as the streaming Prefill has the fingerprint of the model it wraps)."""
        digest = hashlib.sha256()
        for tensor in self.module.state_dict().values():
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().float().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def input_names(self) -> list[str]:
        if self.input_names_override is not None:
            return self.input_names_override
        import inspect

        params = list(inspect.signature(self.module.forward).parameters)
        return params[: len(self.example_inputs)]


def example_ids(module: nn.Module, batch: int, seq_len: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1234)
    return torch.randint(0, module.vocab_size, (batch, seq_len), generator=generator)


def load_model(ref: str, *, batch: int = 2, seq_len: int = 32) -> LoadedModel:
    """A zoo name or `path/file.py:factory` → LoadedModel."""
    if ref in ZOO:
        module = ZOO[ref].create()
        return LoadedModel(ref, module, (example_ids(module, batch, seq_len),), ["logits"])
    path, sep, factory_name = ref.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise ModelNotFoundError(
            f"unknown model {ref!r}: expected a zoo name ({', '.join(ZOO)}) or path/file.py:factory")
    if not Path(path).is_file():
        raise ModelNotFoundError(f"model file {path!r} does not exist (from {ref!r})")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    factory = getattr(mod, factory_name, None)
    if not callable(factory):
        raise ModelNotFoundError(f"{path} has no function {factory_name!r}")
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise ModelNotFoundError(f"{ref}: factory must return (module, example_inputs), got {type(result).__name__}")
    module, inputs = result
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    return LoadedModel(ref, module.eval(), inputs)
