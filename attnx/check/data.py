"""Fresh random inputs at a chosen batch and sequence length, shaped like a model's examples.

The defaults are read by the CLI's parser: this module imports torch only when it draws inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

# one token, and lengths that are not a multiple of a chunk, window or block
DEFAULT_SEQ_LENS = (1, 37, 300)
DEFAULT_PROMPT_LENS = (1, 37)  # streaming: prefill lengths, each followed by DEFAULT_NEW_TOKENS decode steps
DEFAULT_NEW_TOKENS = 8
DEFAULT_BATCH = 2
DEFAULT_SEED = 0  # fixed, as Polygraphy's: a rerun draws the same inputs and gives the same verdict


def random_inputs(example_inputs, names, *, batch: int, seq_len: int, vocab_size: int | None,
                  generator: torch.Generator, draw=None) -> dict[str, np.ndarray]:
    """One feed dict: `draw(batch, seq_len, generator)` where the model says how to draw its
    inputs (images: about seq_len patches), else each example `[B, N, ...]` redrawn as
    `[batch, seq_len, ...]`.

    Integer inputs (token ids) draw from [0, vocab_size), or from the examples' own range
    when the model has no `vocab_size`; float inputs draw from a standard normal.
    """
    import torch

    if draw is not None:
        drawn = draw(batch, seq_len, generator)
        return {name: (t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy())
                for name, t in zip(names, drawn)}
    feed = {}
    for name, example in zip(names, example_inputs):
        shape = (batch, seq_len, *example.shape[2:]) if example.dim() >= 2 else (batch,)
        if example.is_floating_point():
            value = torch.randn(shape, generator=generator, dtype=torch.float64).to(example.dtype)
        else:
            low, high = (0, vocab_size) if vocab_size else (int(example.min()), int(example.max()) + 1)
            value = torch.randint(low, high, shape, generator=generator, dtype=example.dtype)
        feed[name] = value.numpy() if value.dtype != torch.bfloat16 else value.float().numpy()
    return feed


def draw_shaped(example, shape, *, vocab_size: int | None, generator: torch.Generator) -> np.ndarray:
    """One input drawn at an exact `shape` (`--input-shapes name:[dims]`), like `example`: integer
    inputs (token ids) from [0, vocab_size) or the example's own range, float inputs from a standard normal."""
    import torch

    if example.is_floating_point():
        value = torch.randn(tuple(shape), generator=generator, dtype=torch.float64).to(example.dtype)
    else:
        low, high = (0, vocab_size) if vocab_size else (int(example.min()), int(example.max()) + 1)
        value = torch.randint(low, high, tuple(shape), generator=generator, dtype=example.dtype)
    return value.numpy() if value.dtype != torch.bfloat16 else value.float().numpy()
