"""PyTorch modules for every variant and the zoo of tiny end-to-end models."""

from attnx.models.linear_attention import LinearAttention
from attnx.models.softmax_attention import SoftmaxAttention
from attnx.models.zoo import DEFAULT_MODEL, ZOO, LoadedModel, load_model

__all__ = ["DEFAULT_MODEL", "LinearAttention", "LoadedModel", "SoftmaxAttention", "ZOO", "load_model"]
