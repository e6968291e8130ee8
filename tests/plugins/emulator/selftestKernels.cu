// Kernels for the CPU emulator's own tests (tests/test_kernel_emulator.py): one correct kernel, and one
// for each mistake the emulator must catch. Each C entry point launches one and returns 0, or
// ATTNX_ERR_CUDA when the launch failed (attnx_emu_error says why).
#include "attnxKernelApi.h"
#include "tensorCore.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
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

// One warp: c [16][8] float32 = a [16][16] · b [16][8] of T, row-major in global memory, through
// shared memory, ldmatrix (b with .trans) and one mma.sync, as the attnx kernels address them.
template <typename T>
__global__ void mmaProduct(const T* a, const T* b, float* c)
{
    __shared__ __align__(16) T as[16][24]; // rows of 48 bytes: 16-byte aligned
    __shared__ __align__(16) T bs[16][24];
    const int lane = threadIdx.x;
    for (int i = lane; i < 16 * 16; i += 32)
        as[i / 16][i % 16] = a[i];
    for (int i = lane; i < 16 * 8; i += 32)
        bs[i / 8][i % 8] = b[i];
    for (int i = lane; i < 16 * 8; i += 32)
        bs[i / 8][8 + i % 8] = T(0.f);
    __syncthreads();
    uint32_t af[4];
    uint32_t bf[4];
    attnx::tc::ldmatrixX4(af, &as[lane % 8 + 8 * ((lane / 8) % 2)][8 * (lane / 16)]);
    attnx::tc::ldmatrixX4Trans(bf, &bs[lane % 8 + 8 * ((lane / 8) % 2)][8 * (lane / 16)]);
    const uint32_t b0[2] = {bf[0], bf[1]}; // columns 0..7; bf[2], bf[3] are the zero columns 8..15
    float d[4] = {};
    attnx::tc::mma16816<T>(d, af, b0);
    const int g = lane / 4;
    const int t = lane % 4;
    c[g * 8 + 2 * t] = d[0];
    c[g * 8 + 2 * t + 1] = d[1];
    c[(g + 8) * 8 + 2 * t] = d[2];
    c[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// One warp: c [16][8] = a [16][8] · b [8][8] in tf32, fragments read straight from global memory.
__global__ void mmaProductTf32(const float* a, const float* b, float* c)
{
    const int lane = threadIdx.x;
    const int g = lane / 4;
    const int t = lane % 4;
    namespace tc = attnx::tc;
    const uint32_t af[4] = {tc::toTf32(a[g * 8 + t]), tc::toTf32(a[(g + 8) * 8 + t]), tc::toTf32(a[g * 8 + t + 4]),
        tc::toTf32(a[(g + 8) * 8 + t + 4])};
    const uint32_t bf[2] = {tc::toTf32(b[t * 8 + g]), tc::toTf32(b[(t + 4) * 8 + g])};
    float d[4] = {};
    tc::mma1688Tf32(d, af, bf);
    c[g * 8 + 2 * t] = d[0];
    c[g * 8 + 2 * t + 1] = d[1];
    c[(g + 8) * 8 + 2 * t] = d[2];
    c[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// out[0..3] = 16 bytes copied by cp.async into dynamic shared memory, read after a barrier, with or
// without the wait that makes the copy land.
__global__ void asyncCopy(const float* src, float* out, int wait)
{
    extern __shared__ float4 landing[];
    if (threadIdx.x == 0)
    {
        attnx::tc::cpAsync16(landing, src, true);
        attnx::tc::cpAsyncCommit();
        if (wait)
            attnx::tc::cpAsyncWait<0>();
    }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        out[0] = landing[0].x;
        out[1] = landing[0].y;
        out[2] = landing[0].z;
        out[3] = landing[0].w;
    }
}

// ldmatrix from a row address 8 bytes off 16-byte alignment.
__global__ void misalignedLdmatrix(float* out)
{
    __shared__ __align__(16) __half rows[32][16];
    uint32_t r[4];
    attnx::tc::ldmatrixX4(r, &rows[threadIdx.x][4]);
    out[threadIdx.x] = float(r[0]);
}

// Lanes 0..15 shuffle on one line, lanes 16..31 on another.
__global__ void splitShuffles(float* out)
{
    float v = float(threadIdx.x);
    if (threadIdx.x < 16)
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    else
        v = __shfl_xor_sync(0xffffffffu, v, 2);
    out[threadIdx.x] = v;
}

} // namespace

extern "C" ATTNX_API int selftest_mma_product(const void* a, const void* b, float* c, int bf16)
{
    if (bf16)
        mmaProduct<__nv_bfloat16><<<1, 32>>>(static_cast<const __nv_bfloat16*>(a),
            static_cast<const __nv_bfloat16*>(b), c);
    else
        mmaProduct<__half><<<1, 32>>>(static_cast<const __half*>(a), static_cast<const __half*>(b), c);
    return launched();
}

extern "C" ATTNX_API int selftest_mma_product_tf32(const float* a, const float* b, float* c)
{
    mmaProductTf32<<<1, 32>>>(a, b, c);
    return launched();
}

extern "C" ATTNX_API int selftest_async_copy(const float* src, float* out, int wait)
{
    asyncCopy<<<1, 32, 16>>>(src, out, wait);
    return launched();
}

extern "C" ATTNX_API int selftest_misaligned_ldmatrix(float* out)
{
    misalignedLdmatrix<<<1, 32>>>(out);
    return launched();
}

extern "C" ATTNX_API int selftest_split_shuffles(float* out)
{
    splitShuffles<<<1, 32>>>(out);
    return launched();
}

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
