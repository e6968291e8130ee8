"""The C entry points of MixedChunkAttention's CUDA kernels
(trt_plugins/MixedChunkAttention/mixedChunkAttentionKernel.h)."""

from __future__ import annotations

import ctypes

from attnx.ops.entry_point import DTYPE_AND_STREAM, EntryPoint, attribute_params, pointers, sizes
from attnx.ops.mixed_chunk_attention.spec import SPEC

FORWARD = EntryPoint("attnx_mixed_chunk_attention_forward",
                     pointers("quad_q", "quad_k", "lin_q", "lin_k", "v", "bias")
                     + sizes("bias_b", "bias_h", "bias_n", "bias_m") + pointers("y", "workspace")
                     + sizes("B", "H", "N", "S", "E") + attribute_params(SPEC) + DTYPE_AND_STREAM)
WORKSPACE_SIZE = EntryPoint("attnx_mixed_chunk_attention_workspace_size",
                            sizes("B", "H", "N", "S", "E") + (("causal", ctypes.c_int32),), ctypes.c_size_t)
ENTRY_POINTS = (FORWARD, WORKSPACE_SIZE)
