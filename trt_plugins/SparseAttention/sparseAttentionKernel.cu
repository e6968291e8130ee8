// SparseAttention kernel (float32 accumulation; float32/float16/bfloat16 I/O).
//
// One warp per query: lane l holds q[d] and the output accumulator for d, e ≡ l (mod 32). A query's
// allowed keys are at most three arithmetic progressions of positions (allowedKeys), which the warp
// walks four keys at a time: four dot products reduced across the warp together, then one online
// softmax step (running maximum, running sum, float32 accumulator) over the four value rows. No
// disallowed key is read, so the cost per query is its number of allowed keys: at most 2w+1 (local,
// dilated), (1 + a + c)·b (block), 2w+1 + N/t (strided). A block holds 8 neighbouring queries of one (b, h),
// whose key sets overlap, so most key and value rows come from L1/L2.
#include "sparseAttentionKernel.h"

#include "attnx_generated/sparseAttentionParams.h"
#include "kernelCommon.cuh"

#include <cuda_runtime.h>

#include <cmath>

namespace
{

constexpr int kMaxDim = ATTNX_SPARSE_ATTENTION_MAX_HEAD_DIM;
constexpr int kWarps = 8; // queries per block
constexpr int kThreads = kWarps * 32;
constexpr int kBatch = 4; // keys per online-softmax step

using attnx::fromFloat;
using attnx::SparseAttentionParams;
using attnx::toFloat;

__host__ __device__ __forceinline__ int64_t minI64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t maxI64(int64_t a, int64_t b) { return a > b ? a : b; }

// The validated attributes, passed by value to the kernel.
struct Pattern
{
    int kind; // SparseAttentionParams::Pattern
    int window;
    int dilation;
    int stride;
    int block;
    int causal;
    int lookBack;
    int lookAhead;
};

// Key positions first, first + step, ..., first + (count - 1)·step.
struct Progression
{
    int64_t first;
    int64_t step;
    int64_t count;
};

// The keys query i may see (the mask in attnx/ops/sparse_attention/), as 1 to 3 disjoint
// progressions within [0, N); returns how many. Every pattern holds j = i, so count >= 1 in out[0].
// Host-callable too: tests/plugins/test_performer_sparse.py checks it against the mask without a GPU.
__host__ __device__ int allowedKeys(int64_t i, int64_t N, Pattern const& p, Progression* out)
{
    if (p.kind == SparseAttentionParams::kPatternBlock)
    {
        // ⌊i/b⌋ − lookBack <= ⌊j/b⌋ <= ⌊i/b⌋ + lookAhead; causal: and j <= i
        const int64_t tile = i / p.block;
        const int64_t lo = maxI64(0, (tile - p.lookBack) * p.block);
        const int64_t hi = p.causal ? i : minI64((tile + p.lookAhead + 1) * p.block, N) - 1;
        out[0] = {lo, 1, hi - lo + 1};
        return 1;
    }
    // the window: j = i - s·r for s in [-w, w] (causal: [0, w)), r the dilation for dilated, else 1
    const int64_t r = p.kind == SparseAttentionParams::kPatternDilated ? p.dilation : 1;
    const int64_t back = minI64(p.causal ? p.window - 1 : p.window, i / r);  // steps before i, j >= 0
    const int64_t ahead = p.causal ? 0 : minI64(p.window, (N - 1 - i) / r); // steps after i, j < N
    const int64_t lo = i - back * r;
    const int64_t hi = i + ahead * r;
    out[0] = {lo, r, back + ahead + 1};
    if (p.kind != SparseAttentionParams::kPatternStrided)
        return 1;
    // strided (r = 1, the window is [lo, hi]): also j = i ∓ s·t for s >= 1 outside it (causal: j < i)
    const int64_t t = p.stride;
    int n = 1;
    const int64_t firstBelow = (i - lo) / t + 1; // smallest s with i - s·t < lo
    const int64_t lastBelow = i / t;             // largest s with i - s·t >= 0
    if (lastBelow >= firstBelow)
        out[n++] = {i - lastBelow * t, t, lastBelow - firstBelow + 1};
    if (!p.causal)
    {
        const int64_t firstAbove = (hi - i) / t + 1; // smallest s with i + s·t > hi
        const int64_t lastAbove = (N - 1 - i) / t;   // largest s with i + s·t < N
        if (lastAbove >= firstAbove)
            out[n++] = {i + firstAbove * t, t, lastAbove - firstAbove + 1};
    }
    return n;
}

// grid: ceil(B·H·N / 8) blocks of 8 warps; warp → row (b·h)·N + i. kPer = ceil(max(D, E) / 32) values
// of q and of the accumulator per lane.
template <typename T, int kPer>
__global__ void __launch_bounds__(kThreads) sparseAttentionKernel(const T* __restrict__ q, const T* __restrict__ k,
    const T* __restrict__ v, T* __restrict__ y, int64_t rows, int64_t N, int D, int E, float scale, Pattern p)
{
    const int lane = threadIdx.x % 32;
    const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (row >= rows)
        return; // a whole warp: the shuffles below always see 32 lanes
    const int64_t i = row % N;
    const T* kb = k + (row - i) * D;
    const T* vb = v + (row - i) * E;

    float qs[kPer];
    float acc[kPer];
#pragma unroll
    for (int t = 0; t < kPer; ++t)
    {
        const int d = lane + 32 * t;
        qs[t] = d < D ? toFloat(q[row * D + d]) * scale : 0.f;
        acc[t] = 0.f;
    }
    float runMax = -INFINITY;
    float runSum = 0.f;

    Progression keys[3];
    const int nProg = allowedKeys(i, N, p, keys);
    for (int g = 0; g < nProg; ++g)
    {
        const Progression pr = keys[g];
        for (int64_t c = 0; c < pr.count; c += kBatch)
        {
            const int nb = pr.count - c < kBatch ? int(pr.count - c) : kBatch; // the same in every lane
            float s[kBatch];
#pragma unroll
            for (int b = 0; b < kBatch; ++b)
            {
                float dot = 0.f;
                if (b < nb)
                {
                    const T* kr = kb + (pr.first + (c + b) * pr.step) * D;
#pragma unroll
                    for (int t = 0; t < kPer; ++t)
                    {
                        const int d = lane + 32 * t;
                        if (d < D)
                            dot = fmaf(qs[t], toFloat(kr[d]), dot);
                    }
                }
                s[b] = dot;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
            {
#pragma unroll
                for (int b = 0; b < kBatch; ++b)
                    s[b] += __shfl_xor_sync(0xffffffffu, s[b], o);
            }
            float newMax = runMax;
#pragma unroll
            for (int b = 0; b < kBatch; ++b)
                if (b < nb)
                    newMax = fmaxf(newMax, s[b]);
            const float alpha = expf(runMax - newMax); // 0 at the first step, where runMax = -inf
            float pw[kBatch];
            float pSum = 0.f;
#pragma unroll
            for (int b = 0; b < kBatch; ++b)
            {
                pw[b] = b < nb ? expf(s[b] - newMax) : 0.f;
                pSum += pw[b];
            }
            runSum = runSum * alpha + pSum;
#pragma unroll
            for (int t = 0; t < kPer; ++t)
            {
                const int e = lane + 32 * t;
                if (e >= E)
                    continue;
                float a = acc[t] * alpha;
#pragma unroll
                for (int b = 0; b < kBatch; ++b)
                    if (b < nb)
                        a = fmaf(pw[b], toFloat(vb[(pr.first + (c + b) * pr.step) * E + e]), a);
                acc[t] = a;
            }
            runMax = newMax;
        }
    }
    // runSum >= 1: the largest score's weight is exp(0)
    const float inv = 1.f / runSum;
#pragma unroll
    for (int t = 0; t < kPer; ++t)
    {
        const int e = lane + 32 * t;
        if (e < E)
            y[row * E + e] = fromFloat<T>(acc[t] * inv);
    }
}

template <typename T, int kPer>
int launchWidth(const void* q, const void* k, const void* v, void* y, int64_t rows, int64_t N, int D, int E,
    float scale, Pattern const& p, cudaStream_t stream)
{
    const unsigned blocks = unsigned((rows + kWarps - 1) / kWarps);
    sparseAttentionKernel<T, kPer><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(q),
        static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(y), rows, N, D, E, scale, p);
    return cudaGetLastError() == cudaSuccess ? ATTNX_OK : ATTNX_ERR_CUDA;
}

template <typename T>
int launch(const void* q, const void* k, const void* v, void* y, int64_t rows, int64_t N, int D, int E, float scale,
    Pattern const& p, cudaStream_t stream)
{
    const int widest = D > E ? D : E;
    if (widest <= 32)
        return launchWidth<T, 1>(q, k, v, y, rows, N, D, E, scale, p, stream);
    if (widest <= 64)
        return launchWidth<T, 2>(q, k, v, y, rows, N, D, E, scale, p, stream);
    if (widest <= 128)
        return launchWidth<T, 4>(q, k, v, y, rows, N, D, E, scale, p, stream);
    return launchWidth<T, kMaxDim / 32>(q, k, v, y, rows, N, D, E, scale, p, stream);
}

} // namespace

extern "C" int attnx_sparse_attention_forward(const void* q, const void* k, const void* v, void* y, int64_t B,
    int64_t H, int64_t N, int64_t D, int64_t E, int32_t pattern, int32_t window, int32_t dilation, int32_t stride,
    int32_t block, int32_t causal, float scale, int32_t look_back, int32_t look_ahead, int32_t dtype, void* stream)
{
    if (B < 1 || H < 1 || N < 1 || D < 1 || E < 1)
        return ATTNX_ERR_SHAPE;
    if (D > kMaxDim || E > kMaxDim)
        return ATTNX_ERR_HEAD_DIM;
    // the grid counts b·h·n / 8 blocks in 31 bits
    if (B > 0x7fffffffLL || H > 0x7fffffffLL || N > 0x7fffffffLL || B * H > 0x7fffffffLL
        || (B * H * N + kWarps - 1) / kWarps > 0x7fffffffLL)
        return ATTNX_ERR_SHAPE;
    if (!SparseAttentionParams{pattern, window, dilation, stride, block, causal, scale, look_back, look_ahead}.valid())
        return ATTNX_ERR_ATTRIBUTE;
    const Pattern p{pattern, window, dilation, stride, block, causal, look_back, look_ahead};
    const float s = scale > 0.f ? scale : float(1.0 / std::sqrt(double(D)));
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const int d = int(D);
    const int e = int(E);
    switch (dtype)
    {
    case ATTNX_DTYPE_FLOAT32: return launch<float>(q, k, v, y, B * H * N, N, d, e, s, p, st);
    case ATTNX_DTYPE_FLOAT16: return launch<__half>(q, k, v, y, B * H * N, N, d, e, s, p, st);
    case ATTNX_DTYPE_BFLOAT16: return launch<__nv_bfloat16>(q, k, v, y, B * H * N, N, d, e, s, p, st);
    default: return ATTNX_ERR_DTYPE;
    }
}
