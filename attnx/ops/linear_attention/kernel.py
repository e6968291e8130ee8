"""The C entry points of LinearAttention's CUDA kernels (trt_plugins/LinearAttention/linearAttentionKernel.h)."""

from __future__ import annotations

import ctypes

from attnx.ops.entry_point import DTYPE_AND_STREAM, EntryPoint, attribute_params, pointers, sizes
from attnx.ops.linear_attention.spec import SPEC

FORWARD = EntryPoint("attnx_linear_attention_forward",
                     pointers("q", "k", "v", "state_s", "state_z", "y", "state_s_out", "state_z_out", "workspace")
                     + sizes("B", "H", "N", "M", "D", "E") + attribute_params(SPEC) + DTYPE_AND_STREAM)
WORKSPACE_SIZE = EntryPoint("attnx_linear_attention_workspace_size",
                            sizes("B", "H", "N", "D", "E") + (("causal", ctypes.c_int32), ("dtype", ctypes.c_int32)),
                            ctypes.c_size_t)
ENTRY_POINTS = (FORWARD, WORKSPACE_SIZE)
