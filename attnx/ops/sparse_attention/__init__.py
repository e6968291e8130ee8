"""SparseAttention: its spec, mask and float64 reference, row-by-row form and decode step, ONNX body,
torch op and kernel binding. Importing the package registers `torch.ops.attnx.sparse_attention`.
"""

from attnx.ops.sparse_attention import kernel, torch_op
from attnx.ops.sparse_attention.naive import (allowed, allowed_keys, naive_rowwise_sparse_attn, recurrent_step,
                                              reference, window_offsets)
from attnx.ops.sparse_attention.spec import PATTERNS, SPEC
from attnx.ops.sparse_attention.torch_op import window_sparse_attn

__all__ = ["PATTERNS", "SPEC", "allowed", "allowed_keys", "kernel", "naive_rowwise_sparse_attn", "recurrent_step",
           "reference", "torch_op", "window_offsets", "window_sparse_attn"]
