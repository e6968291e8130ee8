// PerformerFeatures CUDA kernels: a C entry point on device pointers, free of TensorRT (and of CUDA
// headers, so ctypes and C callers can use it), so a GPU harness can check it against the float64
// reference in attnx/ops/performer_features/ without building an engine.
#pragma once

// attnx_dtype (of x, w and the features), attnx_status, attnx_status_string
#include "attnxKernelApi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATTNX_PERFORMER_FEATURES_MAX_HEAD_DIM 256

// Bytes of device workspace the forward call needs: kind key, one float32 maximum per (b, h, tile of 8
// rows) and one per (b, h); 0 for query and key_fixed (`kind` as in the forward call), and for a size < 1.
ATTNX_API size_t attnx_performer_features_workspace_size(int64_t B, int64_t H, int64_t N, int32_t kind);

// features = PerformerFeatures(x, w); see attnx/ops/performer_features/.
// x [B,H,N,D], w [M,D] and features [B,H,N,M] in `dtype`; contiguous row-major. kind, eps and offset
// are the spec's attributes in its order, kind the index of its value among the spec's choices;
// PerformerFeaturesParams (attnx_generated/performerFeaturesParams.h, generated from the spec) checks
// them all, offset whatever the kind (only key_fixed uses it).
// Accumulation is float32. Asynchronous on `stream` (a cudaStream_t).
ATTNX_API int attnx_performer_features_forward(const void* x, const void* w, void* features, void* workspace,
    int64_t B, int64_t H, int64_t N, int64_t D, int64_t M, int32_t kind, float eps, float offset, int32_t dtype,
    void* stream);

#ifdef __cplusplus
}
#endif
