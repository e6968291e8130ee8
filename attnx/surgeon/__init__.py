"""Graph surgery on onnx-graphsurgeon: fusion into attnx ops, reassociation, retargeting.

`optimize_model(model, target, passes)` runs the passes in the order of `pipeline.PASSES`
and converts the result to one of the three forms (`retarget.TARGETS`).
"""

from attnx.surgeon.pipeline import PASSES, optimize_model
from attnx.surgeon.retarget import TARGETS

__all__ = ["PASSES", "TARGETS", "optimize_model"]
