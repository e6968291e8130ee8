"""The C entry point of SparseAttention's CUDA kernel (trt_plugins/SparseAttention/sparseAttentionKernel.h)."""

from __future__ import annotations

from attnx.ops.entry_point import DTYPE_AND_STREAM, EntryPoint, attribute_params, pointers, sizes
from attnx.ops.sparse_attention.spec import SPEC

FORWARD = EntryPoint("attnx_sparse_attention_forward",
                     pointers("q", "k", "v", "y") + sizes("B", "H", "N", "D", "E") + attribute_params(SPEC)
                     + DTYPE_AND_STREAM)
ENTRY_POINTS = (FORWARD,)
