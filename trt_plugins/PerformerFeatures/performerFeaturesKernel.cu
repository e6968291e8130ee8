// PerformerFeatures kernels (float32 accumulation; float32/float16/bfloat16 I/O).
//
// One block per (b·h, tile of 8 rows): warp r owns row r of the tile, lane l the features m ≡ l
// (mod 32). The tile's rows x' = x·D^(-1/4) sit in shared memory and w is staged 32 rows at a time,
// so each thread forms one W x' per step. The stabiliser must be known before any feature is written:
// for queries a first pass over all M features takes the row maximum and the second recomputes W x'
// (one more [N, D] × [D, M] product, but no [N, M] buffer); for keys a first launch takes the maximum
// of each tile, a second reduces them per (b, h) into the workspace and a third writes the features;
// key_fixed (c = offset) writes at once.
#include "performerFeaturesKernel.h"

#include "attnx_generated/performerFeaturesParams.h"
#include "kernelCommon.cuh"

#include <cuda_runtime.h>

#include <cmath>

namespace
{

constexpr int kMaxDim = ATTNX_PERFORMER_FEATURES_MAX_HEAD_DIM;
constexpr int kRows = 8;              // rows per block: one warp each
constexpr int kMTile = 32;            // features per step: one lane each
constexpr int kThreads = kRows * 32;  // 256
constexpr int kWStride = kMaxDim + 1; // lane l reads w[l][d]: banks (l + d) mod 32, all different

using attnx::fromFloat;
using attnx::PerformerFeaturesParams;
using attnx::toFloat;

__device__ __forceinline__ float warpSum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warpMax(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// 8 KB of rows and 32.9 KB of projection rows: within the 48 KB of static shared memory
struct Tile
{
    float x[kRows][kMaxDim];
    float w[kMTile][kWStride];
};

// Stages rows [n0, n0 + 8) of x[bh] scaled by D^(-1/4) (zeros past N). Every thread must call it.
template <typename T>
__device__ void stageRows(const T* __restrict__ x, Tile& s, int64_t bh, int64_t n0, int64_t N, int D, float xScale)
{
    for (int t = threadIdx.x; t < kRows * D; t += kThreads)
    {
        const int r = t / D;
        const int d = t % D;
        const int64_t n = n0 + r;
        s.x[r][d] = n < N ? toFloat(x[(bh * N + n) * D + d]) * xScale : 0.f;
    }
    __syncthreads();
}

// ‖x'‖²/2 of this warp's row, in every lane.
__device__ float halfSquaredNorm(Tile const& s, int D)
{
    const int r = threadIdx.x / 32;
    float sq = 0.f;
    for (int d = threadIdx.x % 32; d < D; d += 32)
        sq = fmaf(s.x[r][d], s.x[r][d], sq);
    return warpSum(sq) * 0.5f;
}

// W x' for this thread's (row, m0 + lane), after staging w rows [m0, m0 + 32) (zeros past M). Every
// thread must call it; the same (row, m) gives the same value in every pass.
template <typename T>
__device__ float project(const T* __restrict__ w, Tile& s, int m0, int M, int D)
{
    __syncthreads(); // the previous step's readers of s.w are done
    for (int t = threadIdx.x; t < kMTile * D; t += kThreads)
    {
        const int r = t / D;
        const int d = t % D;
        s.w[r][d] = m0 + r < M ? toFloat(w[int64_t(m0 + r) * D + d]) : 0.f;
    }
    __syncthreads();
    const int r = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    float acc = 0.f;
    for (int d = 0; d < D; ++d)
        acc = fmaf(s.x[r][d], s.w[lane][d], acc);
    return acc;
}

// max over m of W x' for this warp's row, in every lane. Every thread must call it.
template <typename T>
__device__ float rowMax(const T* __restrict__ w, Tile& s, int M, int D)
{
    const int lane = threadIdx.x % 32;
    float mx = -INFINITY;
    for (int m0 = 0; m0 < M; m0 += kMTile)
    {
        const float wx = project(w, s, m0, M, D);
        if (m0 + lane < M)
            mx = fmaxf(mx, wx);
    }
    return warpMax(mx);
}

// grid: b·h × tiles blocks. tileMax[block] = max of W x' over the tile's rows (< N) and all m.
template <typename T>
__global__ void __launch_bounds__(kThreads) tileMaxKernel(const T* __restrict__ x, const T* __restrict__ w,
    float* __restrict__ tileMax, int64_t N, int64_t tiles, int D, int M, float xScale)
{
    __shared__ Tile s;
    __shared__ float warpMaxes[kRows];
    const int64_t bh = blockIdx.x / tiles;
    const int64_t n0 = (blockIdx.x % tiles) * kRows;
    const int r = threadIdx.x / 32;
    stageRows(x, s, bh, n0, N, D, xScale);
    const float mx = rowMax(w, s, M, D);
    if (threadIdx.x % 32 == 0)
        warpMaxes[r] = n0 + r < N ? mx : -INFINITY;
    __syncthreads();
    if (threadIdx.x == 0)
    {
        float v = -INFINITY;
        for (int i = 0; i < kRows; ++i)
            v = fmaxf(v, warpMaxes[i]);
        tileMax[blockIdx.x] = v;
    }
}

// grid: b·h blocks. seqMax[bh] = max over the tiles of bh.
__global__ void __launch_bounds__(kThreads) seqMaxKernel(
    const float* __restrict__ tileMax, float* __restrict__ seqMax, int64_t tiles)
{
    __shared__ float warpMaxes[kRows];
    const int64_t bh = blockIdx.x;
    float v = -INFINITY;
    for (int64_t t = threadIdx.x; t < tiles; t += kThreads)
        v = fmaxf(v, tileMax[bh * tiles + t]);
    v = warpMax(v);
    if (threadIdx.x % 32 == 0)
        warpMaxes[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0)
    {
        for (int i = 0; i < kRows; ++i)
            v = fmaxf(v, warpMaxes[i]);
        seqMax[bh] = v;
    }
}

// grid: b·h × tiles blocks. features = exp(W x' − ‖x'‖²/2 − c)/√M + eps with c the row maximum
// (query), seqMax[bh] (key) or offset (key_fixed).
template <typename T>
__global__ void __launch_bounds__(kThreads) featuresKernel(const T* __restrict__ x, const T* __restrict__ w,
    T* __restrict__ y, const float* __restrict__ seqMax, int64_t N, int64_t tiles, int D, int M, int kind,
    float xScale, float invSqrtM, float eps, float offset)
{
    __shared__ Tile s;
    const int64_t bh = blockIdx.x / tiles;
    const int64_t n0 = (blockIdx.x % tiles) * kRows;
    const int64_t n = n0 + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    stageRows(x, s, bh, n0, N, D, xScale);
    const float halfNorm = halfSquaredNorm(s, D);
    float c = offset;
    if (kind == PerformerFeaturesParams::kKindQuery)
        c = rowMax(w, s, M, D);
    else if (kind == PerformerFeaturesParams::kKindKey)
        c = seqMax[bh];
    for (int m0 = 0; m0 < M; m0 += kMTile)
    {
        const float wx = project(w, s, m0, M, D);
        const int m = m0 + lane;
        if (n < N && m < M)
            y[(bh * N + n) * M + m] = fromFloat<T>(expf(wx - halfNorm - c) * invSqrtM + eps);
    }
}

template <typename T>
int launch(const void* x, const void* w, void* y, void* workspace, int64_t BH, int64_t N, int D, int M, int kind,
    float eps, float offset, cudaStream_t stream)
{
    const T* xt = static_cast<const T*>(x);
    const T* wt = static_cast<const T*>(w);
    const int64_t tiles = (N + kRows - 1) / kRows;
    const unsigned blocks = unsigned(BH * tiles);
    const float xScale = float(std::pow(double(D), -0.25));
    const float invSqrtM = float(1.0 / std::sqrt(double(M)));
    float* seqMax = nullptr;
    if (kind == PerformerFeaturesParams::kKindKey)
    {
        float* tileMax = static_cast<float*>(workspace);
        seqMax = tileMax + BH * tiles;
        tileMaxKernel<T><<<blocks, kThreads, 0, stream>>>(xt, wt, tileMax, N, tiles, D, M, xScale);
        seqMaxKernel<<<unsigned(BH), kThreads, 0, stream>>>(tileMax, seqMax, tiles);
    }
    featuresKernel<T><<<blocks, kThreads, 0, stream>>>(
        xt, wt, static_cast<T*>(y), seqMax, N, tiles, D, M, kind, xScale, invSqrtM, eps, offset);
    return cudaGetLastError() == cudaSuccess ? ATTNX_OK : ATTNX_ERR_CUDA;
}

} // namespace

extern "C" size_t attnx_performer_features_workspace_size(int64_t B, int64_t H, int64_t N, int32_t kind)
{
    if (kind != PerformerFeaturesParams::kKindKey || B < 1 || H < 1 || N < 1)
        return 0;
    return size_t(B * H * ((N + kRows - 1) / kRows + 1)) * sizeof(float);
}

extern "C" int attnx_performer_features_forward(const void* x, const void* w, void* features, void* workspace,
    int64_t B, int64_t H, int64_t N, int64_t D, int64_t M, int32_t kind, float eps, float offset, int32_t dtype,
    void* stream)
{
    if (B < 1 || H < 1 || N < 1 || D < 1 || M < 1)
        return ATTNX_ERR_SHAPE;
    if (D > kMaxDim)
        return ATTNX_ERR_HEAD_DIM;
    // the grid counts b·h·tiles in 31 bits; features are indexed in int, one step past M included
    if (B > 0x7fffffffLL || H > 0x7fffffffLL || N > 0x7fffffffLL || M > 0x7fffffffLL - kMTile
        || B * H * ((N + kRows - 1) / kRows) > 0x7fffffffLL)
        return ATTNX_ERR_SHAPE;
    if (!PerformerFeaturesParams{kind, eps, offset}.valid())
        return ATTNX_ERR_ATTRIBUTE;
    if (kind == PerformerFeaturesParams::kKindKey && !workspace)
        return ATTNX_ERR_WORKSPACE;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const int d = int(D);
    const int m = int(M);
    switch (dtype)
    {
    case ATTNX_DTYPE_FLOAT32: return launch<float>(x, w, features, workspace, B * H, N, d, m, kind, eps, offset, s);
    case ATTNX_DTYPE_FLOAT16: return launch<__half>(x, w, features, workspace, B * H, N, d, m, kind, eps, offset, s);
    case ATTNX_DTYPE_BFLOAT16:
        return launch<__nv_bfloat16>(x, w, features, workspace, B * H, N, d, m, kind, eps, offset, s);
    default: return ATTNX_ERR_DTYPE;
    }
}
