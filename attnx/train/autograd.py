"""Gradients for attnx's custom ops, which register no autograd kernel of their own (the models
only run them forward for export and inference): without this, backward through
`torch.ops.attnx.*` silently treats them as constants, and GAU, linear attention and FLASH
would train everything but their attention.

Each op's backward recomputes its eager torch path (what the CompositeExplicitAutograd function of
`attnx/ops/<op>/torch_op.py` calls: plain torch ops) under autograd and takes the vector-Jacobian
product there: the gradient of exactly the forward the model ran. Registered once, on import.
"""

from __future__ import annotations

import torch

from attnx.ops import linear_attention, mixed_chunk_attention, relu_squared_attention
from attnx.ops.linear_attention.torch_op import chunk_linear_attn
from attnx.ops.mixed_chunk_attention.torch_op import chunk_mixed_attn
from attnx.ops.relu_squared_attention.torch_op import relu_squared_attn

# op → its eager path as the op's CompositeExplicitAutograd function runs it (attributes resolved)
EAGER = {
    "attnx::relu_squared_attention": lambda q, k, v, bias=None, **attrs: relu_squared_attn(
        q, k, v, bias, **relu_squared_attention.SPEC.resolve(attrs)).to(q.dtype),
    "attnx::linear_attention": lambda q, k, v, state_s=None, state_z=None, **attrs: chunk_linear_attn(
        q, k, v, state_s, state_z, **linear_attention.SPEC.resolve(attrs)),
    "attnx::mixed_chunk_attention": lambda quad_q, quad_k, lin_q, lin_k, v, bias=None, **attrs: chunk_mixed_attn(
        quad_q, quad_k, lin_q, lin_k, v, bias, **mixed_chunk_attention.SPEC.resolve(attrs)).to(quad_q.dtype),
}


def _register(op: str, eager) -> None:
    def setup_context(ctx, inputs, keyword_only_inputs, output):
        ctx.inputs, ctx.attrs = inputs, keyword_only_inputs
        ctx.save_for_backward(*(t for t in inputs if isinstance(t, torch.Tensor)))

    def backward(ctx, *grads):
        saved = iter(ctx.saved_tensors)
        inputs = [next(saved).detach().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) else x
                  for x in ctx.inputs]
        with torch.enable_grad():
            outputs = eager(*inputs, **ctx.attrs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
        wanted = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
        found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True)
                     if pairs and wanted else [None] * len(wanted))
        return tuple(next(found) if isinstance(x, torch.Tensor) and x.requires_grad else None for x in inputs)

    torch.library.register_autograd(op, backward, setup_context=setup_context)


for _op, _eager in EAGER.items():
    _register(_op, _eager)
