// SparseAttention CUDA kernel: a C entry point on device pointers, free of TensorRT (and of CUDA
// headers, so ctypes and C callers can use it), so a GPU harness can check it against the float64
// reference in attnx/ops/sparse_attention/ without building an engine.
#pragma once

// attnx_dtype, attnx_status, attnx_status_string
#include "attnxKernelApi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATTNX_SPARSE_ATTENTION_MAX_HEAD_DIM 256

// y = SparseAttention(q, k, v); see attnx/ops/sparse_attention/.
// q, k [B,H,N,D], v and y [B,H,N,E] in `dtype`; contiguous row-major. pattern to scale are the spec's
// attributes in its order, pattern the index of its value among the spec's choices;
// SparseAttentionParams (attnx_generated/sparseAttentionParams.h, generated from the spec) checks them
// all, window, dilation, stride and block whatever the pattern, as the spec does. scale 0 means
// 1/sqrt(D). Only the allowed keys of each query are read. Accumulation is float32; no workspace.
// Asynchronous on `stream` (a cudaStream_t).
ATTNX_API int attnx_sparse_attention_forward(const void* q, const void* k, const void* v, void* y, int64_t B,
    int64_t H, int64_t N, int64_t D, int64_t E, int32_t pattern, int32_t window, int32_t dilation, int32_t stride,
    int32_t block, int32_t causal, float scale, int32_t look_back, int32_t look_ahead, int32_t dtype, void* stream);

#ifdef __cplusplus
}
#endif
