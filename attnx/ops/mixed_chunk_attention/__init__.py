"""MixedChunkAttention (FLASH): its spec, float64 reference, chunk-by-chunk form and recurrent step, ONNX
body, torch op and kernel binding. Importing the package registers `torch.ops.attnx.mixed_chunk_attention`.
"""

from attnx.ops.mixed_chunk_attention import kernel, torch_op
from attnx.ops.mixed_chunk_attention.naive import (naive_chunkwise_mixed_chunk_attn, recurrent_step, reference,
                                                   scales)
from attnx.ops.mixed_chunk_attention.spec import SPEC
from attnx.ops.mixed_chunk_attention.torch_op import chunk_mixed_attn

__all__ = ["SPEC", "chunk_mixed_attn", "kernel", "naive_chunkwise_mixed_chunk_attn", "recurrent_step", "reference",
           "scales", "torch_op"]
