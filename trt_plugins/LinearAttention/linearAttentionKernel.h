// LinearAttention CUDA kernels: a C entry point on device pointers, free of TensorRT (and of CUDA
// headers, so ctypes and C callers can use it), so a GPU harness can check it against the float64
// reference in attnx/ops/linear_attention.py without building an engine.
#pragma once

#include <stddef.h>
#include <stdint.h>

// exported from libattnx_plugins.so, which hides everything else
#define ATTNX_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

// I/O dtype of q, k, v and y. States are always float32.
enum attnx_dtype { ATTNX_DTYPE_FLOAT32 = 0, ATTNX_DTYPE_FLOAT16 = 1, ATTNX_DTYPE_BFLOAT16 = 2 };

// The spec's feature_map values, in the spec's order ("elu", "relu", "identity").
enum attnx_feature_map { ATTNX_FEATURE_ELU = 0, ATTNX_FEATURE_RELU = 1, ATTNX_FEATURE_IDENTITY = 2 };

enum attnx_status {
    ATTNX_OK = 0,
    ATTNX_ERR_SHAPE = 1,      // a size is < 1, or M != N with causal
    ATTNX_ERR_HEAD_DIM = 2,   // D or E above ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM
    ATTNX_ERR_DTYPE = 3,      // not an attnx_dtype
    ATTNX_ERR_ATTRIBUTE = 4,  // feature_map, eps or chunk_size outside what the spec allows
    ATTNX_ERR_STATE = 5,      // state_s given without state_z or the reverse (same for the outputs)
    ATTNX_ERR_WORKSPACE = 6,  // workspace needed but null
    ATTNX_ERR_CUDA = 7        // a kernel launch failed (cudaGetLastError)
};

#define ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM 256

// Bytes of device workspace the forward call needs (float32 S [B,H,D,E] and z [B,H,D] for the
// non-causal form when no state outputs receive them; 0 for the causal form).
ATTNX_API size_t attnx_linear_attention_workspace_size(int64_t B, int64_t H, int64_t D, int64_t E, int32_t causal);

// y = LinearAttention(q, k, v[, state_s, state_z]); see attnx/ops/linear_attention.py.
// q [B,H,N,D], k [B,H,M,D], v [B,H,M,E], y [B,H,N,E] in `dtype`; contiguous row-major.
// state_s/state_z ([B,H,D,E]/[B,H,D] float32) and the outputs state_s_out/state_z_out may be null
// (both of a pair or neither). Accumulation is float32. Asynchronous on `stream` (a cudaStream_t).
// chunk_size is validated but only tiles; the causal form here is a sequential scan per (b, h).
ATTNX_API int attnx_linear_attention_forward(const void* q, const void* k, const void* v, const float* state_s,
    const float* state_z, void* y, float* state_s_out, float* state_z_out, void* workspace, int64_t B,
    int64_t H, int64_t N, int64_t M, int64_t D, int64_t E, int32_t causal, int32_t feature_map,
    int32_t normalize, float eps, int32_t chunk_size, int32_t dtype, void* stream);

// A fixed English text for an attnx_status.
ATTNX_API const char* attnx_status_string(int status);

#ifdef __cplusplus
}
#endif
