// LinearAttention CUDA kernels: a C entry point on device pointers, free of TensorRT (and of CUDA
// headers, so ctypes and C callers can use it), so a GPU harness can check it against the float64
// reference in attnx/ops/linear_attention/ without building an engine.
#pragma once

// attnx_dtype (of q, k, v and y; states are always float32), attnx_status, attnx_status_string
#include "attnxKernelApi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM 256

// Bytes of device workspace the forward call needs for I/O `dtype` (an attnx_dtype): causal on CUDA
// cores, the float32 state of every 64-row chunk, (D·E + D)·ceil(N/64) floats per (b, h); causal on
// tensor cores (float16 or bfloat16, D a multiple of 16 up to 64, E a multiple of 16), none;
// non-causal, S [B,H,D,E] and z [B,H,D] in float32 (used only when the state outputs are null). 0 for
// a size < 1.
ATTNX_API size_t attnx_linear_attention_workspace_size(
    int64_t B, int64_t H, int64_t N, int64_t D, int64_t E, int32_t causal, int32_t dtype);

// y = LinearAttention(q, k, v[, state_s, state_z]); see attnx/ops/linear_attention/.
// q [B,H,N,D], k [B,H,M,D], v [B,H,M,E], y [B,H,N,E] in `dtype`; contiguous row-major.
// state_s/state_z ([B,H,D,E]/[B,H,D] float32) and the outputs state_s_out/state_z_out may be null
// (both of a pair or neither). causal to chunk_size are the spec's attributes in its order, feature_map
// the index of its value among the spec's choices; LinearAttentionParams
// (attnx_generated/linearAttentionParams.h, generated from the spec) checks them. chunk_size is
// checked but has no effect here (the causal kernels use 64-row chunks). Accumulation is float32.
// Asynchronous on `stream` (a cudaStream_t).
ATTNX_API int attnx_linear_attention_forward(const void* q, const void* k, const void* v, const float* state_s,
    const float* state_z, void* y, float* state_s_out, float* state_z_out, void* workspace, int64_t B,
    int64_t H, int64_t N, int64_t M, int64_t D, int64_t E, int32_t causal, int32_t feature_map,
    int32_t normalize, float eps, int32_t chunk_size, int32_t dtype, void* stream);

#ifdef __cplusplus
}
#endif
