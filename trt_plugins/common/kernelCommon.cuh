// Helpers the attnx kernels share: conversions between their I/O types (float32, float16, bfloat16)
// and the float32 they accumulate in, the register-tile update of a matrix product, and a launch
// with dynamic shared memory. Included by the *Kernel.cu files only; free of TensorRT.
#pragma once

#include "attnxKernelApi.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace attnx
{

__device__ __forceinline__ float toFloat(float x) { return x; }
__device__ __forceinline__ float toFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float toFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

// round to nearest even, as the references' casts do
template <typename T> __device__ __forceinline__ T fromFloat(float x);
template <> __device__ __forceinline__ float fromFloat<float>(float x) { return x; }
template <> __device__ __forceinline__ __half fromFloat<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// acc[i][j] += a[i]·b[j]: one step of a thread's R×C tile of a matrix product.
template <int R, int C>
__device__ __forceinline__ void addOuterProduct(float (&acc)[R][C], const float (&a)[R], const float (&b)[C])
{
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < C; ++j)
            acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
}

constexpr size_t kDefaultSharedBytes = 48 * 1024; // dynamic shared memory every device gives unasked

// kernel<<<blocks, threads, sharedBytes, stream>>>(args...), opting in first where sharedBytes is above
// kDefaultSharedBytes; ATTNX_ERR_CUDA when the opt-in or the launch fails.
template <typename... KernelArgs, typename... Args>
int launchWithShared(void (*kernel)(KernelArgs...), unsigned blocks, unsigned threads, size_t sharedBytes,
    cudaStream_t stream, Args... args)
{
    if (sharedBytes > kDefaultSharedBytes
        && cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sharedBytes)) != cudaSuccess)
        return ATTNX_ERR_CUDA;
    kernel<<<blocks, threads, sharedBytes, stream>>>(args...);
    return cudaGetLastError() == cudaSuccess ? ATTNX_OK : ATTNX_ERR_CUDA;
}

// The queries of this block in a 1-D grid of query tiles of kBQ rows: block x serves b·h = x / tiles
// and query tile tiles − 1 − x % tiles (the last tiles, which have the most keys under causal, start
// first).
struct QueryTile
{
    int64_t bh;
    int64_t q0;
    int rows; // up to kBQ; fewer in the last tile
};

template <int kBQ>
__device__ __forceinline__ QueryTile queryTile(int64_t N)
{
    const int64_t tiles = (N + kBQ - 1) / kBQ;
    const int64_t q0 = (tiles - 1 - int64_t(blockIdx.x) % tiles) * kBQ;
    return {int64_t(blockIdx.x) / tiles, q0, int(N - q0 < kBQ ? N - q0 : kBQ)};
}

// Launches kernel over BH·⌈N/kBQ⌉ query tiles (launchWithShared); ATTNX_ERR_SHAPE when the grid
// exceeds 31 bits.
template <int kBQ, typename... KernelArgs, typename... Args>
int launchQueryTiles(void (*kernel)(KernelArgs...), int64_t BH, int64_t N, unsigned threads, size_t sharedBytes,
    cudaStream_t stream, Args... args)
{
    const int64_t blocks = BH * ((N + kBQ - 1) / kBQ);
    if (blocks > 0x7fffffffLL)
        return ATTNX_ERR_SHAPE;
    return launchWithShared(kernel, unsigned(blocks), threads, sharedBytes, stream, args...);
}

} // namespace attnx
