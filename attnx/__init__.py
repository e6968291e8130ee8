"""attnx: efficient attention variants from PyTorch to ONNX, TensorRT and parity checks."""

__version__ = "0.1.0"
