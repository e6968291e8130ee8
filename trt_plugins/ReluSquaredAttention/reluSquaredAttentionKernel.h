// ReluSquaredAttention CUDA kernel: a C entry point on device pointers, free of TensorRT (and of CUDA
// headers, so ctypes and C callers can use it), so a GPU harness can check it against the float64
// reference in attnx/ops/relu_squared_attention.py without building an engine.
#pragma once

// attnx_dtype, attnx_status, attnx_status_string
#include "attnxKernelApi.h"

#ifdef __cplusplus
extern "C" {
#endif

// The spec's norm values, in the spec's order ("n", "visible", "fixed", "none").
enum attnx_length_norm { ATTNX_NORM_N = 0, ATTNX_NORM_VISIBLE = 1, ATTNX_NORM_FIXED = 2, ATTNX_NORM_NONE = 3 };

// The spec's norm_placement values, in the spec's order ("outside", "inside").
enum attnx_norm_placement { ATTNX_NORM_OUTSIDE = 0, ATTNX_NORM_INSIDE = 1 };

#define ATTNX_RELU_SQUARED_ATTENTION_MAX_HEAD_DIM 256

// y = ReluSquaredAttention(q, k, v[, bias]); see attnx/ops/relu_squared_attention.py.
// q [B,H,N,D], k [B,H,M,D], v [B,H,M,E], y [B,H,N,E] in `dtype`; contiguous row-major; M = N when
// causal. bias, NULL for none, is [bias_b, bias_h, bias_n, bias_m] in `dtype`, contiguous, each
// axis 1 (broadcast) or the full B, H, N, M (ATTNX_ERR_SHAPE otherwise); it is added to s·q·kᵀ
// before the norm and the relu, and its dims are not read when it is NULL. scale 0 means
// 1/sqrt(D); norm is an attnx_length_norm, norm_placement an attnx_norm_placement, fixed_length
// >= 1 (checked whatever the norm, as the spec does).
// Accumulation is float32; no workspace. Asynchronous on `stream` (a cudaStream_t).
ATTNX_API int attnx_relu_squared_attention_forward(const void* q, const void* k, const void* v, const void* bias,
    int64_t bias_b, int64_t bias_h, int64_t bias_n, int64_t bias_m, void* y, int64_t B, int64_t H, int64_t N,
    int64_t M, int64_t D, int64_t E, int32_t causal, float scale, int32_t norm, int32_t fixed_length,
    int32_t norm_placement, int32_t dtype, void* stream);

#ifdef __cplusplus
}
#endif
