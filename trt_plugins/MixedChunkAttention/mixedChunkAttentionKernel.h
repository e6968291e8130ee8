// MixedChunkAttention CUDA kernels: a C entry point on device pointers, free of TensorRT (and of CUDA
// headers, so ctypes and C callers can use it), so a GPU harness can check it against the float64
// reference in attnx/ops/mixed_chunk_attention/ without building an engine.
#pragma once

// attnx_dtype, attnx_status, attnx_status_string
#include "attnxKernelApi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATTNX_MIXED_CHUNK_ATTENTION_MAX_HEAD_DIM 256

// Bytes of device workspace the forward call needs: the float32 linear part [B,H,N,E], and for the
// non-causal form the float32 state Σ_j k'_j v_jᵀ [B,H,S,E].
ATTNX_API size_t attnx_mixed_chunk_attention_workspace_size(
    int64_t B, int64_t H, int64_t N, int64_t S, int64_t E, int32_t causal);

// y = MixedChunkAttention(quad_q, quad_k, lin_q, lin_k, v, bias); see attnx/ops/mixed_chunk_attention/.
// quad_q, quad_k, lin_q, lin_k [B,H,N,S], v [B,H,N,E], y [B,H,N,E] in `dtype`; contiguous row-major.
// bias is null or a contiguous [bias_b, bias_h, bias_n, bias_m] in `dtype`, each 1 (broadcast, read
// with stride 0) or full in [B, H, g, g]: added to s_q·q·k at the positions inside the chunk.
// causal to lin_scale are the spec's attributes in its order; MixedChunkAttentionParams
// (attnx_generated/mixedChunkAttentionParams.h, generated from the spec) checks them. N need not be a
// multiple of chunk_size g (the last chunk is short, which is what zero padding computes).
// quad_scale 0 means 1/g; lin_scale 0 means 1/N (causal: 1/g). `workspace`
// holds attnx_mixed_chunk_attention_workspace_size bytes. Accumulation and chunk states are float32.
// Asynchronous on `stream` (a cudaStream_t).
ATTNX_API int attnx_mixed_chunk_attention_forward(const void* quad_q, const void* quad_k, const void* lin_q,
    const void* lin_k, const void* v, const void* bias, int64_t bias_b, int64_t bias_h, int64_t bias_n,
    int64_t bias_m, void* y, void* workspace, int64_t B, int64_t H, int64_t N, int64_t S, int64_t E, int32_t causal,
    int32_t chunk_size, float quad_scale, float lin_scale, int32_t dtype, void* stream);

#ifdef __cplusplus
}
#endif
