"""The dtypes and opsets an export takes, by name: read by the CLI's parser without importing torch."""

DTYPE_NAMES = ("fp32", "fp16", "bf16")
OPSETS = (18, 23)  # 23: softmax attention as ONNX Attention, RoPE as RotaryEmbedding
DEFAULT_OPSET = 18
