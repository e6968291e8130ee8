"""The C entry point of ReluSquaredAttention's CUDA kernel
(trt_plugins/ReluSquaredAttention/reluSquaredAttentionKernel.h)."""

from __future__ import annotations

from attnx.ops.entry_point import DTYPE_AND_STREAM, EntryPoint, attribute_params, pointers, sizes
from attnx.ops.relu_squared_attention.spec import SPEC

FORWARD = EntryPoint("attnx_relu_squared_attention_forward",
                     pointers("q", "k", "v", "bias") + sizes("bias_b", "bias_h", "bias_n", "bias_m") + pointers("y")
                     + sizes("B", "H", "N", "M", "D", "E") + attribute_params(SPEC) + DTYPE_AND_STREAM)
ENTRY_POINTS = (FORWARD,)
