// Kernels for the CPU emulator's own tests (tests/test_kernel_emulator.py): one correct kernel, and one
// for each mistake the emulator must catch. Each C entry point launches one and returns 0, or
// ATTNX_ERR_CUDA when the launch failed (attnx_emu_error says why).
#include "attnxKernelApi.h"

#include <cuda_runtime.h>

namespace
{

constexpr int kThreads = 256;

int launched()
{
    return cudaGetLastError() == cudaSuccess ? ATTNX_OK : ATTNX_ERR_CUDA;
}

// out[block] = the sum of the block's 256 values of x: through shared memory, a barrier and a warp's
// shuffles, as the attnx kernels reduce.
__global__ void blockSum(const float* x, float* out, int n)
{
    __shared__ float s[kThreads];
    const int t = threadIdx.x;
    const int i = blockIdx.x * kThreads + t;
    s[t] = i < n ? x[i] : 0.f;
    __syncthreads();
    if (t < 32)
    {
        float v = 0.f;
        for (int j = t; j < kThreads; j += 32)
            v += s[j];
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (t == 0)
            out[blockIdx.x] = v;
    }
}

// out[t] = x[t + 1]: read from shared memory that thread t + 1 writes, with no barrier between.
__global__ void missingBarrier(const float* x, float* out)
{
    __shared__ float s[kThreads];
    const int t = threadIdx.x;
    s[t] = x[t];
    out[t] = s[(t + 1) % kThreads];
}

// A barrier only the first 64 threads reach; the others exit.
__global__ void partialBarrier(float* out)
{
    if (threadIdx.x < 64)
    {
        __syncthreads();
        out[threadIdx.x] = 1.f;
    }
}

// Odd and even threads wait at different barriers.
__global__ void splitBarriers(float* out)
{
    if (threadIdx.x % 2)
        __syncthreads();
    else
        __syncthreads();
    out[threadIdx.x] = 1.f;
}

// A full-warp shuffle in a block of 48 threads: the second warp has 16 lanes.
__global__ void shortWarpShuffle(float* out)
{
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, float(threadIdx.x), 1);
}

// Lanes 16..31 exit before a full-warp shuffle.
__global__ void exitedLaneShuffle(float* out)
{
    if (threadIdx.x >= 16)
        return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}

// Writes dyn[index] of `bytes` bytes of dynamic shared memory.
__global__ void sharedStore(int index)
{
    extern __shared__ float dyn[];
    if (threadIdx.x == 0)
        dyn[index] = 1.f;
}

// out[index] = 1 from one thread.
__global__ void storeAt(float* out, int64_t index)
{
    if (threadIdx.x == 0)
        out[index] = 1.f;
}

// out[0] = in[index] from one thread.
__global__ void loadAt(const float* in, float* out, int64_t index)
{
    if (threadIdx.x == 0)
        out[0] = in[index];
}

// A local array larger than an emulated thread's stack.
__global__ void deepStack(float* out)
{
    volatile float big[64 * 1024];
    big[threadIdx.x] = 1.f;
    out[threadIdx.x] = big[threadIdx.x];
}

} // namespace

extern "C" ATTNX_API int selftest_block_sum(const float* x, float* out, int n)
{
    blockSum<<<(n + kThreads - 1) / kThreads, kThreads>>>(x, out, n);
    return launched();
}

extern "C" ATTNX_API int selftest_missing_barrier(const float* x, float* out)
{
    missingBarrier<<<1, kThreads>>>(x, out);
    return launched();
}

extern "C" ATTNX_API int selftest_partial_barrier(float* out)
{
    partialBarrier<<<1, 128>>>(out);
    return launched();
}

extern "C" ATTNX_API int selftest_split_barriers(float* out)
{
    splitBarriers<<<1, 128>>>(out);
    return launched();
}

extern "C" ATTNX_API int selftest_short_warp_shuffle(float* out)
{
    shortWarpShuffle<<<1, 48>>>(out);
    return launched();
}

extern "C" ATTNX_API int selftest_exited_lane_shuffle(float* out)
{
    exitedLaneShuffle<<<1, 32>>>(out);
    return launched();
}

// A launch with `bytes` of dynamic shared memory after opting in to `opt_in` (0: no opt-in), writing
// float `index` of it. Returns cudaFuncSetAttribute's failure as ATTNX_ERR_CUDA too.
extern "C" ATTNX_API int selftest_shared_store(int bytes, int opt_in, int index)
{
    if (opt_in && cudaFuncSetAttribute(sharedStore, cudaFuncAttributeMaxDynamicSharedMemorySize, opt_in) != cudaSuccess)
        return ATTNX_ERR_CUDA;
    sharedStore<<<1, 32, size_t(bytes)>>>(index);
    return launched();
}

extern "C" ATTNX_API int selftest_launch_shape(unsigned grid_x, unsigned grid_y, unsigned block_x, float* out)
{
    storeAt<<<dim3(grid_x, grid_y, 1), dim3(block_x, 1, 1)>>>(out, 0);
    return launched();
}

extern "C" ATTNX_API int selftest_store_at(float* out, int64_t index)
{
    storeAt<<<1, 32>>>(out, index);
    return launched();
}

extern "C" ATTNX_API int selftest_load_at(const float* in, float* out, int64_t index)
{
    loadAt<<<1, 32>>>(in, out, index);
    return launched();
}

extern "C" ATTNX_API int selftest_deep_stack(float* out)
{
    deepStack<<<1, 32>>>(out);
    return launched();
}
