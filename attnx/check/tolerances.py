"""Parity tolerances per exported dtype, against a float64 copy of the eager model.

An element fails when it is off by more than atol AND by more than rtol relative to the
float64 value (Polygraphy's elementwise check).

- fp32: atol 1e-4, rtol 1e-3. float32 rounds at 6e-8 relative; a tiny model's logits pass
  through two blocks, sums over up to N keys and a chunked prefix over N/64 chunk states,
  and land near 1e-6 of float64 (measured: 7e-7 at N = 300). 1e-4 leaves room for longer
  sequences and other CPUs while a wrong mask, normaliser or scale moves outputs by 1e-2
  or more.
- fp16: atol 1e-2, rtol 1e-2. float16 rounds at 4.9e-4 relative and every layer rounds
  again; with float32 accumulation inside the attention ops the tiny models' logits (|y| of
  order 1) land near 1e-3 (measured: 1.2e-3 at N = 300), so 1e-2 leaves 8× headroom.
- bf16: atol 1.5e-1, rtol 1e-1. bfloat16 keeps 8 bits of mantissa (3.9e-3 relative), eight
  times coarser than float16.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2),
    "bf16": Tolerance(atol=1.5e-1, rtol=1e-1),
}
