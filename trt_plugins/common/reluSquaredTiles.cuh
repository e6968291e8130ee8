// The tiled relu² attention core that ReluSquaredAttention and MixedChunkAttention share, like flash
// attention: one block per (b·h, tile of kBQ queries) keeps its queries in shared memory and walks a
// range of keys kBK at a time. Per key tile it forms the kBQ×kBK scores relu(s·qkᵀ + bias)² in shared
// memory, masked by the op's rule, then adds scores·V into float32 registers; no N×M matrix reaches
// global memory. What differs between the ops — which keys a query sees, and what happens to the
// finished rows — stays in their kernels. Included by *Kernel.cu files only; free of TensorRT.
#pragma once

#include "attnxKernelApi.h"
#include "kernelCommon.cuh"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace attnx
{
namespace relu2
{

constexpr int kThreads = 256; // 8 warps; scores use them as a 16×16 grid
constexpr int kWarps = kThreads / 32;
constexpr size_t kMaxSharedBytes = 99 * 1024;     // the smallest opt-in limit among sm_80..sm_90 (sm_86/89)

// Tile shape for head dims max(D, E) <= kCap, sized so shared memory stays within kMaxSharedBytes.
// Thread (ty, tx) of the 16×16 grid owns score rows ty + 16i, columns tx + 16j; warp w owns output
// rows w + 8i, lane l output columns l + 32j.
template <int kCap>
struct Tile
{
    static_assert(kCap == 64 || kCap == 128 || kCap == 256, "tiles exist for head dims up to 64, 128 and 256");
    static constexpr int kBQ = kCap == 256 ? 32 : 64; // queries per block
    static constexpr int kBK = kBQ;                   // keys per step
    static constexpr int kSR = kBQ / 16;              // score rows per thread
    static constexpr int kSC = kBK / 16;              // score columns per thread
    static constexpr int kAR = kBQ / kWarps;          // output rows per thread
    static constexpr int kAC = kCap / 32;             // output columns per thread
    static constexpr int kLdp = kBK + 1;              // row stride of the scores
};

// Row strides in shared memory: odd, so the 16 key rows a warp reads at one d fall in 16 banks.
__host__ __device__ __forceinline__ int qStride(int D) { return D | 1; }
__host__ __device__ __forceinline__ int kvStride(int D, int E) { return (D > E ? D : E) | 1; }

// q tile [kBQ][qStride], K-then-V tile [kBK][kvStride], scores [kBQ][kBK + 1], all float32.
template <int kCap>
size_t sharedBytes(int D, int E)
{
    using S = Tile<kCap>;
    return sizeof(float) * (size_t(S::kBQ) * qStride(D) + size_t(S::kBK) * kvStride(D, E) + size_t(S::kBQ) * S::kLdp);
}

static_assert(Tile<256>::kBQ * (256 + 1) * sizeof(float) + Tile<256>::kBK * (256 + 1) * sizeof(float)
            + Tile<256>::kBQ * Tile<256>::kLdp * sizeof(float)
        <= kMaxSharedBytes,
    "the widest tiles must fit the smallest opt-in shared memory");
static_assert(Tile<128>::kBQ * 129 * sizeof(float) + Tile<128>::kBK * 129 * sizeof(float)
            + Tile<128>::kBQ * Tile<128>::kLdp * sizeof(float)
        <= kMaxSharedBytes,
    "128-wide tiles must fit the smallest opt-in shared memory");

// This block's queries (kernelCommon.cuh's QueryTile, kBQ = Tile<kCap>::kBQ).
template <int kCap>
__device__ __forceinline__ QueryTile queryTile(int64_t N)
{
    return attnx::queryTile<Tile<kCap>::kBQ>(N);
}

template <int kCap>
using Accumulator = float[Tile<kCap>::kAR][Tile<kCap>::kAC];

// No additive bias on the scores (MixedChunkAttention, ReluSquaredAttention without one).
struct NoBias
{
    __device__ __forceinline__ float operator()(int, int64_t) const { return 0.f; }
};

// acc += Σ_key keep·relu(s·q·k + bias)² v over keys [kBegin, kEnd) for the block's query tile `tile`:
// qb points at its first query [D], kb and vb at key and value 0 of its (b, h) ([D] and [E] per row).
// keep(i, r, key) says whether score row r (= ty + 16i, a query of the tile) sees `key`, a key below
// kEnd; bias(r, key) is the term added to that score, asked only for rows below tile.rows and kept
// keys. smem holds sharedBytes<kCap>(D, E); every thread of the block calls this.
template <typename T, int kCap, typename Keep, typename Bias = NoBias>
__device__ __forceinline__ void accumulateReluSquared(float* smem, const T* __restrict__ qb, const T* __restrict__ kb,
    const T* __restrict__ vb, const QueryTile& tile, int D, int E, float scale, int64_t kBegin, int64_t kEnd,
    Keep keep, Accumulator<kCap>& acc, Bias bias = Bias{})
{
    using S = Tile<kCap>;
    const int ldq = qStride(D);
    const int ldkv = kvStride(D, E);
    float* qs = smem;
    float* kvs = qs + S::kBQ * ldq;
    float* ps = kvs + S::kBK * ldkv;

    // s folded into q; rows past the tile are zero (their scores are never written out)
    for (int t = threadIdx.x; t < S::kBQ * D; t += kThreads)
    {
        const int r = t / D;
        const int c = t - r * D;
        qs[r * ldq + c] = r < tile.rows ? toFloat(qb[int64_t(r) * D + c]) * scale : 0.f;
    }

    const int tx = threadIdx.x % 16;
    const int ty = threadIdx.x / 16;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    for (int64_t k0 = kBegin; k0 < kEnd; k0 += S::kBK)
    {
        const int kRows = int(kEnd - k0 < S::kBK ? kEnd - k0 : S::kBK);
        __syncthreads(); // the previous tile's readers of kvs (as V) and ps are done; qs is written
        for (int t = threadIdx.x; t < S::kBK * D; t += kThreads)
        {
            const int r = t / D;
            const int c = t - r * D;
            kvs[r * ldkv + c] = r < kRows ? toFloat(kb[(k0 + r) * D + c]) : 0.f;
        }
        __syncthreads();
        float sc[S::kSR][S::kSC] = {};
        for (int d = 0; d < D; ++d)
        {
            float a[S::kSR];
            float b[S::kSC];
#pragma unroll
            for (int i = 0; i < S::kSR; ++i)
                a[i] = qs[(ty + 16 * i) * ldq + d];
#pragma unroll
            for (int j = 0; j < S::kSC; ++j)
                b[j] = kvs[(tx + 16 * j) * ldkv + d];
            addOuterProduct(sc, a, b);
        }
#pragma unroll
        for (int i = 0; i < S::kSR; ++i)
        {
#pragma unroll
            for (int j = 0; j < S::kSC; ++j)
            {
                const int r = ty + 16 * i;
                const int c = tx + 16 * j;
                if constexpr (std::is_same<Bias, NoBias>::value)
                {
                    const float x = fmaxf(sc[i][j], 0.f);
                    ps[r * S::kLdp + c] = c < kRows && keep(i, r, k0 + c) ? x * x : 0.f;
                }
                else
                {
                    // the bias is read only where it exists: rows of the tile, kept keys
                    const bool kept = c < kRows && r < tile.rows && keep(i, r, k0 + c);
                    const float x = kept ? fmaxf(sc[i][j] + bias(r, k0 + c), 0.f) : 0.f;
                    ps[r * S::kLdp + c] = x * x;
                }
            }
        }
        __syncthreads(); // every score has read kvs as K: it now takes V
        for (int t = threadIdx.x; t < S::kBK * E; t += kThreads)
        {
            const int r = t / E;
            const int c = t - r * E;
            kvs[r * ldkv + c] = r < kRows ? toFloat(vb[(k0 + r) * E + c]) : 0.f;
        }
        __syncthreads();
        for (int c = 0; c < kRows; ++c)
        {
            float vv[S::kAC];
#pragma unroll
            for (int j = 0; j < S::kAC; ++j)
            {
                const int e = lane + 32 * j;
                vv[j] = e < E ? kvs[c * ldkv + e] : 0.f;
            }
#pragma unroll
            for (int i = 0; i < S::kAR; ++i)
            {
                const float p = ps[(warp + kWarps * i) * S::kLdp + c];
#pragma unroll
                for (int j = 0; j < S::kAC; ++j)
                    acc[i][j] = fmaf(p, vv[j], acc[i][j]);
            }
        }
    }
}

// Hands each finished output row this thread owns to the op: row(r) for query r of the tile (below
// tile.rows) returns a writer, called as writer(e, value) for each column e (below E) the thread holds.
template <int kCap, typename Row>
__device__ __forceinline__ void forEachOutputRow(const QueryTile& tile, int E, const Accumulator<kCap>& acc, Row row)
{
    using S = Tile<kCap>;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < S::kAR; ++i)
    {
        const int r = warp + kWarps * i;
        if (r >= tile.rows)
            continue;
        auto write = row(r);
#pragma unroll
        for (int j = 0; j < S::kAC; ++j)
        {
            const int e = lane + 32 * j;
            if (e < E)
                write(e, acc[i][j]);
        }
    }
}

// Launches kernel<<<BH·tiles, kThreads, sharedBytes<kCap>(D, E)>>>(args...) (launchQueryTiles).
template <int kCap, typename... KernelArgs, typename... Args>
int launchTiles(void (*kernel)(KernelArgs...), int64_t BH, int64_t N, int D, int E, cudaStream_t stream, Args... args)
{
    return launchQueryTiles<Tile<kCap>::kBQ>(kernel, BH, N, kThreads, sharedBytes<kCap>(D, E), stream, args...);
}

// f(std::integral_constant<int, kCap>{}) for the narrowest tile that holds head dims D and E.
template <typename F>
int withTileFor(int D, int E, F f)
{
    const int widest = D > E ? D : E;
    if (widest <= 64)
        return f(std::integral_constant<int, 64>{});
    if (widest <= 128)
        return f(std::integral_constant<int, 128>{});
    return f(std::integral_constant<int, 256>{});
}

} // namespace relu2
} // namespace attnx
