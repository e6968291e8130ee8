"""The passes' names in pipeline order, and the target forms: what the CLI lists, readable without
importing onnx. The passes themselves are pipeline.py's, the forms retarget.py's."""

PASS_ORDER = (  # why this order: pipeline.py's docstring
    "fuse-rotary",
    "fuse-sparse-attention",
    "fuse-softmax-attention",
    "fuse-performer-features",
    "fuse-relu-squared-attention",
    "fuse-mixed-chunk-attention",
    "reassociate",
    "fuse-linear-attention",
)
TARGETS = ("ort", "portable", "trt", "ort-trt")
