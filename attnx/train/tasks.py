"""The synthetic tasks, generated on the fly from a torch.Generator.

Both are a needle in the context: one position anywhere before the last holds what the last
position must answer, and every other position is a distractor. Their difficulty does not change
with length (one needle, the same token sets), so accuracy at 16× the training length measures
the attention alone. The zoo's TinyLM has no position embedding: both tasks are addressed by
content (one token per key-value pair), not by position.

Token ids, in a vocabulary of 256:
- recall: pair (k, v) is k·VALUES + v for k < KEYS, v < VALUES; the query for key k is
  QUERY_BASE + k; the answer is v (a class id in [0, VALUES));
- copy: data tokens [0, DATA), noise tokens [NOISE_BASE, NOISE_BASE + NOISE), the marker MARKER;
  the answer is the data token.
"""

from __future__ import annotations

import torch

KEYS, VALUES, QUERY_BASE = 16, 8, 128
DATA, NOISE_BASE, NOISE, MARKER = 32, 192, 32, 255


def recall(batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [batch, length] int64, answers [batch] int64): pairs, then the query token."""
    key = torch.randint(0, KEYS, (batch, 1), generator=generator)
    value = torch.randint(0, VALUES, (batch,), generator=generator)
    # distractor keys: any key but the queried one (an offset of 1..KEYS-1 from it)
    other = (key + torch.randint(1, KEYS, (batch, length - 1), generator=generator)) % KEYS
    ids = other * VALUES + torch.randint(0, VALUES, (batch, length - 1), generator=generator)
    needle = torch.randint(0, length - 1, (batch,), generator=generator)
    rows = torch.arange(batch)
    ids[rows, needle] = key[:, 0] * VALUES + value
    return torch.cat([ids, QUERY_BASE + key], dim=1), value


def copy(batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [batch, length] int64, answers [batch] int64): noise with one data token, then the marker."""
    data = torch.randint(0, DATA, (batch,), generator=generator)
    ids = NOISE_BASE + torch.randint(0, NOISE, (batch, length - 1), generator=generator)
    needle = torch.randint(0, length - 1, (batch,), generator=generator)
    ids[torch.arange(batch), needle] = data
    return torch.cat([ids, torch.full((batch, 1), MARKER)], dim=1), data


GENERATORS = {"recall": recall, "copy": copy}
