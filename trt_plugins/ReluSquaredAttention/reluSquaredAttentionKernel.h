// ReluSquaredAttention CUDA kernel: a C entry point on device pointers, free of TensorRT (and of CUDA
// headers, so ctypes and C callers can use it), so a GPU harness can check it against the float64
// reference in attnx/ops/relu_squared_attention/ without building an engine.
#pragma once

// attnx_dtype, attnx_status, attnx_status_string
#include "attnxKernelApi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATTNX_RELU_SQUARED_ATTENTION_MAX_HEAD_DIM 256

// y = ReluSquaredAttention(q, k, v[, bias]); see attnx/ops/relu_squared_attention/.
// q [B,H,N,D], k [B,H,M,D], v [B,H,M,E], y [B,H,N,E] in `dtype`; contiguous row-major; M = N when
// causal. bias, NULL for none, is [bias_b, bias_h, bias_n, bias_m] in `dtype`, contiguous, each
// axis 1 (broadcast) or the full B, H, N, M (ATTNX_ERR_SHAPE otherwise); it is added to s·q·kᵀ
// before the norm and the relu, and its dims are not read when it is NULL. causal to norm_placement
// are the spec's attributes in its order, norm and norm_placement the index of their value among the
// spec's choices; ReluSquaredAttentionParams (attnx_generated/reluSquaredAttentionParams.h, generated
// from the spec) checks them all, fixed_length whatever the norm, as the spec does.
// Accumulation is float32; no workspace. Asynchronous on `stream` (a cudaStream_t).
ATTNX_API int attnx_relu_squared_attention_forward(const void* q, const void* k, const void* v, const void* bias,
    int64_t bias_b, int64_t bias_h, int64_t bias_n, int64_t bias_m, void* y, int64_t B, int64_t H, int64_t N,
    int64_t M, int64_t D, int64_t E, int32_t causal, float scale, int32_t norm, int32_t fixed_length,
    int32_t norm_placement, int32_t dtype, void* stream);

#ifdef __cplusplus
}
#endif
