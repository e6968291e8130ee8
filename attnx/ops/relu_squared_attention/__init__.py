"""ReluSquaredAttention: its spec, float64 reference and row-by-row form, ONNX body, torch op and
kernel binding. Importing the package registers `torch.ops.attnx.relu_squared_attention`.
"""

from attnx.ops.relu_squared_attention import kernel, torch_op
from attnx.ops.relu_squared_attention.naive import naive_rowwise_relu_squared_attn, reference, row_lengths
from attnx.ops.relu_squared_attention.spec import NORMS, PLACEMENTS, SPEC
from attnx.ops.relu_squared_attention.torch_op import relu_squared_attn

__all__ = ["NORMS", "PLACEMENTS", "SPEC", "kernel", "naive_rowwise_relu_squared_attn", "reference",
           "relu_squared_attn", "row_lengths", "torch_op"]
