"""The C entry points of PerformerFeatures' CUDA kernels (trt_plugins/PerformerFeatures/performerFeaturesKernel.h)."""

from __future__ import annotations

import ctypes

from attnx.ops.entry_point import DTYPE_AND_STREAM, EntryPoint, attribute_params, pointers, sizes
from attnx.ops.performer_features.spec import SPEC

FORWARD = EntryPoint("attnx_performer_features_forward",
                     pointers("x", "w", "features", "workspace") + sizes("B", "H", "N", "D", "M")
                     + attribute_params(SPEC) + DTYPE_AND_STREAM)
WORKSPACE_SIZE = EntryPoint("attnx_performer_features_workspace_size",
                            sizes("B", "H", "N") + (("kind", ctypes.c_int32),), ctypes.c_size_t)
ENTRY_POINTS = (FORWARD, WORKSPACE_SIZE)
