"""Emitting one attnx `LinearAttention` node for operands in any axis order.

The attributes go through the op's spec, so nothing here restates them.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from attnx.ops import get_spec
from attnx.surgeon.contraction import Operand
from attnx.surgeon.graph import Emitter, take_over
from attnx.surgeon.layout import from_bhnd, to_bhnd

SPEC = get_spec("LinearAttention")
# eps for a row sum the graph divides by without one (the spec wants eps > 0): far below
# float32 resolution of any positive row sum, so the result does not move
EPS_WHEN_ABSENT = 1e-12


def describe(spec, resolved: dict) -> str:
    """Attributes as `name=value`, floats short."""
    return ", ".join(f"{a.name}={resolved[a.name]:g}" if a.type is float else f"{a.name}={resolved[a.name]}"
                     for a in spec.attributes)


def emit_linear_attention(emit: Emitter, *, q: Operand, k: Operand, v: Operand, batch: str, n: str, m: str,
                          d: str, e: str, out: gs.Tensor, out_labels: str, attrs: dict) -> str:
    """Replace the value of `out` (labels `out_labels`) by LinearAttention(q, k, v, **attrs)."""
    resolved = SPEC.resolve(attrs)
    qc, kc, vc = to_bhnd(emit, q, batch + n + d), to_bhnd(emit, k, batch + m + d), to_bhnd(emit, v, batch + m + e)
    y = emit.op(SPEC.name, qc, kc, vc, domain=SPEC.domain,
                attrs={a.name: a.to_onnx(resolved[a.name]) for a in SPEC.attributes})
    y.dtype = out.dtype
    take_over(out, from_bhnd(emit, y, batch + n + e, out_labels), emit)
    return describe(SPEC, resolved)
