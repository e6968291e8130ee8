"""The model zoo: small deterministic end-to-end models, and loading a model by name.

A model reference is a zoo name (`linear-tiny`) or `path/file.py:factory`, where `factory()`
returns `(module, example_inputs)`. A factory's inputs are `[B, N, ...]`: dim 0 is the batch
and dim 1 the sequence, both exported as dynamic; a factory that takes `batch` and `seq_len`
keywords is asked for the example's sizes (`load_model`). A zoo entry may take other inputs (images
[B, C, H, W]): it then declares its dynamic axes and how to draw inputs at a given batch and
"length" (for images, about that many patches), and export and parity use both.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from attnx.errors import ModelFactoryError, ModelNotFoundError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_MODEL = "linear-tiny"


def example_ids(module: nn.Module, batch: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor]:
    """Token ids [batch, seq_len] for a language model (`module.vocab_size`)."""
    import torch

    return (torch.randint(0, module.vocab_size, (batch, seq_len), generator=generator),)


# draws a model's inputs: (module, batch, length, generator) → tensors
InputDrawer = Callable[["nn.Module", int, int, "torch.Generator"], "tuple[torch.Tensor, ...]"]


def _later(target: str, /) -> Callable[..., Any]:
    """`target` (`module.name` in attnx.models), imported when first called: the zoo lists its
    entries without importing torch or building a model."""
    module, _, name = target.rpartition(".")

    def call(*args, **kwargs):
        return getattr(importlib.import_module(f"attnx.models.{module}"), name)(*args, **kwargs)

    return call


def _lm(attention: str, /, *args, **kwargs) -> Callable[[], nn.Module]:
    """A builder of TinyLM whose blocks' attention is `attention(d, *args, **kwargs)` (a `_later` target)."""
    return lambda: _later("tiny_lm.TinyLM")(lambda d: _later(attention)(d, *args, **kwargs))


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """`inputs` draws the model's inputs at a batch and length; `axes` names, per input, the
    axes exported as dynamic (None: batch at dim 0, seq at dim 1)."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    seed: int = 0
    inputs: InputDrawer = example_ids
    axes: tuple[dict[int, str], ...] | None = None

    def create(self) -> nn.Module:
        """The module with weights drawn from the entry's seed, without touching global RNG state."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.build().eval()


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("softmax-tiny", "causal LM, 2 blocks, 4 heads, softmax attention with the log-n scale (n_train 512)",
             _lm("softmax_attention.SoftmaxAttention", 4, causal=True, scale_mode="log_n", n_train=512)),
    ZooEntry("softmax-sqrtd-tiny", "causal LM, 2 blocks, 4 heads, softmax attention with the 1/√d scale",
             _lm("softmax_attention.SoftmaxAttention", 4, causal=True, scale_mode="default")),
    ZooEntry("linear-tiny", "causal LM, 2 blocks, 4 heads, linear attention (elu+1, normalised, chunk 64)",
             _lm("linear_attention.LinearAttention", 4, causal=True, feature_map="elu", chunk_size=64)),
    ZooEntry("performer-tiny", "causal LM, 2 blocks, 4 heads, Performer FAVOR+ (32 orthogonal random features "
             "per head, fixed at export) into linear attention",
             _lm("performer.Performer", 4, features=32, causal=True, chunk_size=64)),
    ZooEntry("gau-tiny", "causal LM, 2 blocks, GAU (s 32, expansion 2), relu²(QKᵀ/√s) / (i+1), row i divided by "
             "its visible count, norm outside the square",
             _lm("gau.GAU", qk_dim=32, attention="relu2", causal=True, norm="visible")),
    ZooEntry("gau-n-tiny", "causal LM, 2 blocks, GAU (s 32, expansion 2), relu²(QKᵀ/√s) / n with n the total length "
             "(every row depends on it: no streaming), for the length-generalisation benchmark",
             _lm("gau.GAU", qk_dim=32, attention="relu2", causal=True, norm="n")),
    ZooEntry("gau-fixed-tiny", "causal LM, 2 blocks, GAU (s 32, expansion 2), relu²(QKᵀ/√s) / 64, a fixed length "
             "norm", _lm("gau.GAU", qk_dim=32, attention="relu2", causal=True, norm="fixed", fixed_length=64)),
    ZooEntry("gau-softmax-tiny", "causal LM, 2 blocks, GAU (s 32, expansion 2) with softmax and the log-n scale "
             "(n_train 64)", _lm("gau.GAU", qk_dim=32, attention="softmax", causal=True, n_train=64)),
    ZooEntry("flash-tiny", "causal LM, 2 blocks, FLASH mixed chunk attention (chunk 32, s 32, expansion 2)",
             _lm("flash.FLASH", qk_dim=32, causal=True, chunk_size=32)),
    ZooEntry("local-tiny", "causal LM, 2 blocks, 4 heads, local softmax attention (window 16)",
             _lm("sparse_attention.SparseAttention", 4, pattern="local", window=16, causal=True)),
    ZooEntry("dilated-tiny", "causal LM, 2 blocks, 4 heads, dilated softmax attention (window 8, dilation 3)",
             _lm("sparse_attention.SparseAttention", 4, pattern="dilated", window=8, dilation=3, causal=True)),
    ZooEntry("strided-tiny", "causal LM, 2 blocks, 4 heads, strided softmax attention (window 8 ∪ every 16th)",
             _lm("sparse_attention.SparseAttention", 4, pattern="strided", window=8, stride=16, causal=True)),
    ZooEntry("transnormer-tiny", "causal LM, 2 blocks, 4 heads: DiagAttention (block 32) below, gated "
             "NormAttention above", lambda: _later("transnormer.transnormer_lm")(layers=2, heads=4, block=32)),
    ZooEntry("vit-rope2d-tiny", "image classifier: 4×4 patches, 2 blocks, 4 heads, 2-D RoPE, rotary linear "
             "attention; images [B, 3, H, W], length = about that many patches; opset 23 (RotaryEmbedding)",
             lambda: _later("vit.TinyViT")(patch=4, channels=3, dim=64, heads=4, layers=2, classes=10),
             inputs=_later("vit.example_images"), axes=({0: "batch", 2: "height", 3: "width"},)),
)}

# `<variant>-trained`: a `-tiny` entry's architecture with the weights `attnx train` left in
# attnx/models/trained/ (associative recall at N = 64; each file records the command that made it)
TRAINED = {"gau-n-trained": "gau-n-tiny", "gau-fixed-trained": "gau-fixed-tiny",
           "gau-softmax-trained": "gau-softmax-tiny", "softmax-sqrtd-trained": "softmax-sqrtd-tiny",
           "softmax-trained": "softmax-tiny", "linear-trained": "linear-tiny", "flash-trained": "flash-tiny"}
ZOO.update({name: ZooEntry(name, f"{base}, trained on associative recall at N = 64 (attnx/models/trained/)",
                           functools.partial(_later("trained.build"), name, base))
            for name, base in TRAINED.items()})


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
    # fresh inputs at (batch, length, generator); None: each example redrawn as `[batch, length, ...]`
    draw: Callable[[int, int, torch.Generator], tuple[torch.Tensor, ...]] | None = None
    # the batch and length the example inputs were drawn at (a factory's: read from them; None: unknown)
    batch: int | None = None
    seq_len: int | None = None

    def axes(self) -> tuple[dict[int, str], ...]:
        """The dynamic axes of every input: declared, or batch at dim 0 and seq at dim 1."""
        if self.dynamic_axes is not None:
            return self.dynamic_axes
        return tuple({0: "batch", 1: "seq"} if t.dim() >= 2 else {0: "batch"} for t in self.example_inputs)

    def identity_module(self) -> nn.Module:
        """The module a file records: the model a wrapper (`wrapped`, as the streaming Prefill and
        Decode have) is part of, else the module itself."""
        return getattr(self.module, "wrapped", self.module)

    def fingerprint(self) -> dict[str, str]:
        """{metadata key: sha256} of the architecture and of the weights (attnx/models/fingerprint.py)."""
        from attnx.models.fingerprint import fingerprint

        return fingerprint(self.identity_module())

    def input_names(self) -> list[str]:
        if self.input_names_override is not None:
            return self.input_names_override
        import inspect

        params = list(inspect.signature(self.module.forward).parameters)
        return params[: len(self.example_inputs)]


ZOO_BATCH, ZOO_SEQ_LEN = 2, 32  # the example a zoo model draws when load_model is given no size


def load_model(ref: str, *, batch: int | None = None, seq_len: int | None = None) -> LoadedModel:
    """A zoo name or `path/file.py:factory` → LoadedModel, its example inputs drawn at `batch` and `seq_len`.

    A zoo model draws them itself (None: ZOO_BATCH, ZOO_SEQ_LEN). A factory is called with each size
    given as a keyword (`factory(batch=4)`), which it must take (a parameter of that name, or
    **kwargs; otherwise ModelFactoryError) and honour; a size not given is the factory's own (one
    it requires is given the zoo's). LoadedModel.batch and .seq_len are the sizes used."""
    import torch

    if ref in ZOO:
        entry = ZOO[ref]
        batch = ZOO_BATCH if batch is None else batch
        seq_len = ZOO_SEQ_LEN if seq_len is None else seq_len
        module = entry.create()
        inputs = entry.inputs(module, batch, seq_len, torch.Generator().manual_seed(1234))
        return LoadedModel(ref, module, inputs, ["logits"], entry.axes,
                           draw=functools.partial(entry.inputs, module), batch=batch, seq_len=seq_len)
    path, sep, factory_name = ref.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise ModelNotFoundError(
            f"unknown model {ref!r}: expected a zoo name ({', '.join(ZOO)}) or path/file.py:factory")
    if not Path(path).is_file():
        raise ModelNotFoundError(f"model file {path!r} does not exist (from {ref!r})")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # a SyntaxError, an ImportError, whatever the file's top level raises
        raise ModelFactoryError(f"{path}: expected a Python file that imports, found that importing it raises "
                                f"{type(exc).__name__}: {exc}") from exc
    factory = getattr(mod, factory_name, None)
    if not callable(factory):
        raise ModelNotFoundError(f"{path} has no function {factory_name!r}")
    sizes = _factory_sizes(ref, factory, {"batch": batch, "seq_len": seq_len})
    try:
        result = factory(**sizes)
    except Exception as exc:
        raise ModelFactoryError(f"{ref}: expected the factory to return (module, example_inputs), found that "
                                f"it raises {type(exc).__name__}: {exc}") from exc
    module, inputs = _factory_result(ref, result)
    _check_example_sizes(ref, inputs, sizes)
    return LoadedModel(ref, module.eval(), inputs, batch=inputs[0].shape[0],
                       seq_len=inputs[0].shape[1] if inputs[0].dim() >= 2 else None)


_SIZE_FLAGS = {"batch": "--batch", "seq_len": "--seq-len"}  # how a user asks for each size on the command line


def _factory_sizes(ref: str, factory: Callable[..., Any], asked: dict[str, int | None]) -> dict[str, int]:
    """The keywords to call `factory` with: every size in `asked` that is not None, which the factory
    must take by keyword (a parameter of that name, or **kwargs); a size not asked for that it
    requires (a parameter without a default) gets the zoo's default."""
    import inspect

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a callable whose signature Python cannot read (a builtin)
        signature = None
    params = signature.parameters if signature is not None else {}
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    defaults = {"batch": ZOO_BATCH, "seq_len": ZOO_SEQ_LEN}
    sizes = {}
    for name, value in asked.items():
        param = params.get(name)
        takes = takes_any or (param is not None and param.kind in by_keyword)
        if value is not None:
            if not takes:
                name_of = getattr(factory, "__name__", "factory")
                found = f"{name_of}{signature}" if signature is not None else f"{name_of} (no signature to read)"
                raise ModelFactoryError(
                    f"{ref}: {name} {value} was asked for ({_SIZE_FLAGS[name]} on the command line), but the factory "
                    f"takes no {name!r} keyword: expected a factory with a {name!r} parameter (or **kwargs) that draws "
                    f"its example at that size, found {found}; without {_SIZE_FLAGS[name]} its own example is used")
            sizes[name] = value
        elif param is not None and param.kind in by_keyword and param.default is inspect.Parameter.empty:
            sizes[name] = defaults[name]
    return sizes


def _check_example_sizes(ref: str, inputs: tuple[torch.Tensor, ...], sizes: dict[str, int]) -> None:
    """A factory given `sizes` must return example inputs `[batch, seq_len, ...]` of those sizes."""
    for index, tensor in enumerate(inputs):
        for dim, name in ((0, "batch"), (1, "seq_len")):
            if name in sizes and tensor.dim() > dim and tensor.shape[dim] != sizes[name]:
                raise ModelFactoryError(
                    f"{ref}: expected the factory, called with {name}={sizes[name]}, to return example inputs of "
                    f"{name} {sizes[name]} at dim {dim}, found input {index} of shape {list(tensor.shape)}")


def _factory_result(ref: str, result) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """(module, example_inputs) from what a factory returned; anything else says what it found."""
    import torch
    from torch import nn

    if not (isinstance(result, tuple) and len(result) == 2):
        found = f"a tuple of {len(result)}" if isinstance(result, tuple) else f"a {type(result).__name__}"
        raise ModelFactoryError(f"{ref}: expected the factory to return (module, example_inputs), found {found}")
    module, inputs = result
    if not isinstance(module, nn.Module):
        raise ModelFactoryError(f"{ref}: expected a torch.nn.Module first in what the factory returns, found a "
                                f"{type(module).__name__}")
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    if not isinstance(inputs, (tuple, list)) or not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        found = (f"a {type(inputs).__name__}" if not isinstance(inputs, (tuple, list)) else
                 "an empty sequence" if not inputs else
                 f"a sequence holding {', '.join(sorted({type(t).__name__ for t in inputs}))}")
        raise ModelFactoryError(f"{ref}: expected example_inputs to be a tensor or a tuple of tensors, found {found}")
    return module, tuple(inputs)
