"""LinearAttention: its spec, float64 reference and recurrent form, ONNX body, torch op and kernel binding.

Importing the package registers `torch.ops.attnx.linear_attention`.
"""

from attnx.ops.linear_attention import kernel, torch_op
from attnx.ops.linear_attention.naive import (FEATURE_MAPS, naive_recurrent_linear_attn, recurrent_step,
                                              reference)
from attnx.ops.linear_attention.spec import SPEC
from attnx.ops.linear_attention.torch_op import chunk_linear_attn

__all__ = ["FEATURE_MAPS", "SPEC", "chunk_linear_attn", "kernel", "naive_recurrent_linear_attn", "recurrent_step",
           "reference", "torch_op"]
