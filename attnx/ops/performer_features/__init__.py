"""PerformerFeatures (FAVOR+): its spec, float64 reference and row-by-row form, ONNX body, torch op and
kernel binding. Importing the package registers `torch.ops.attnx.performer_features`.
"""

from attnx.ops.performer_features import kernel, torch_op
from attnx.ops.performer_features.naive import naive_rowwise_favor_features, reference, stabiliser
from attnx.ops.performer_features.spec import KINDS, SPEC
from attnx.ops.performer_features.torch_op import favor_features

__all__ = ["KINDS", "SPEC", "favor_features", "kernel", "naive_rowwise_favor_features", "reference", "stabiliser",
           "torch_op"]
