// The relu² attention core on tensor cores, for float16 and bfloat16 I/O with head dims that are
// multiples of 16 up to 128 (reluSquaredTiles.cuh's CUDA-core core serves float32 and other head
// dims). One block of four warps per (b·h, tile of 64 queries), 16 queries per warp, walks a range of
// keys 64 at a time, as flash attention does: K and V tiles come into shared memory by cp.async, two
// stages deep, so the next tile loads while this one is used; per tile each warp forms its 16×64
// scores S = Q·Kᵀ with mma.sync (float32 accumulators; Q stays in registers), applies the op's mask,
// bias and relu² to them in registers, and adds P·V, P the scores rounded to the I/O type, into
// float32 accumulators. No score leaves the registers. P is relu² itself, not yet divided by a length
// norm (the op applies that to the finished float32 row): relu² of scores of everyday size sits well
// inside float16's range, where relu²/L for long sequences would fall into its subnormals. A score
// above 255 makes a float16 P of inf (float16 ends at 65504), which reaches the output as inf;
// bfloat16 has float32's range. Included by *Kernel.cu files only; free of TensorRT.
#pragma once

#include "attnxKernelApi.h"
#include "kernelCommon.cuh"
#include "tensorCore.cuh"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace attnx
{
namespace relu2mma
{

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBQ = kWarps * 16; // queries per block: 16 per warp
constexpr int kBK = 64;          // keys per step
constexpr int kMaxDim = 128;

// Whether the tensor-core core takes head dims D (q, k) and E (v).
__host__ __device__ inline bool takes(int64_t D, int64_t E)
{
    return D % 16 == 0 && E % 16 == 0 && D >= 16 && E >= 16 && D <= kMaxDim && E <= kMaxDim;
}

// Row stride of every tile in shared memory, in elements: 16 bytes more than the widest head dim, so
// the eight rows an ldmatrix reads start in eight different bank groups.
__host__ __device__ inline int rowStride(int D, int E)
{
    return (D > E ? D : E) + 8;
}

// The Q tile [kBQ rows], then two stages of a K tile and a V tile [kBK rows each].
template <typename T>
size_t sharedBytes(int D, int E)
{
    return sizeof(T) * size_t(rowStride(D, E)) * (kBQ + 4 * kBK);
}

// The accumulators of a warp's 16 output rows: n8 tile j, element r at row g + 8(r/2), column
// 8j + 2t + r%2 (tensorCore.cuh's C layout).
template <int kDim>
using Output = float[kDim / 8][4];

// This block's queries (kernelCommon.cuh's QueryTile, kBQ rows).
__device__ __forceinline__ QueryTile queryTile(int64_t N)
{
    return attnx::queryTile<kBQ>(N);
}

struct NoBias
{
    __device__ __forceinline__ float operator()(int, int64_t) const { return 0.f; }
};

// o += Σ_key [keep(r, key)] · relu(scale·q_r·k_key + bias(r, key))² · v_key over keys [kBegin, kEnd)
// for the `rows` queries at qb ([D] per row), keys and values of one (b, h) at kb and vb (key 0; [D]
// and [E] per row). keep(r, key) and bias(r, key) are asked only for rows r below `rows` and keys
// below kEnd. smem holds sharedBytes<T>(D, E); every thread of the block calls this, and takes(D, E)
// holds.
template <typename T, int kDim, typename Keep, typename Bias = NoBias>
__device__ __forceinline__ void accumulate(T* smem, const T* __restrict__ qb, const T* __restrict__ kb,
    const T* __restrict__ vb, int rows, int D, int E, float scale, int64_t kBegin, int64_t kEnd, Keep keep,
    Output<kDim>& o, Bias bias = Bias{})
{
    const int ld = rowStride(D, E);
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int g = lane / 4;
    const int t = lane % 4;
    T* qs = smem;
    T* kvs = smem + kBQ * ld;
    const int64_t tiles = (kEnd - kBegin + kBK - 1) / kBK;
    auto loadKeys = [&](int64_t tile) {
        const int64_t k0 = kBegin + tile * kBK;
        const int n = int(kEnd - k0 < kBK ? kEnd - k0 : kBK);
        T* ks = kvs + (tile % 2) * 2 * kBK * ld;
        tc::loadTileAsync<kThreads>(ks, ld, kb + k0 * D, D, kBK, n, D);
        tc::loadTileAsync<kThreads>(ks + kBK * ld, ld, vb + k0 * E, E, kBK, n, E);
    };
    tc::loadTileAsync<kThreads>(qs, ld, qb, D, kBQ, rows, D);
    tc::cpAsyncCommit();
    loadKeys(0);
    tc::cpAsyncCommit();

    const int r0 = warp * 16 + g; // this thread's rows of the warp's 16: r0 and r0 + 8
    // lane l points ldmatrix at row l % 8 of matrix l / 8: matrices 1 and 3 are the second 8 rows,
    // 2 and 3 the second 8 columns
    const int lrow = lane % 8 + 8 * ((lane / 8) % 2);
    const int lcol = 8 * (lane / 16);

    uint32_t qf[kDim / 16][4];
    for (int64_t tile = 0; tile < tiles; ++tile)
    {
        if (tile + 1 < tiles)
        {
            loadKeys(tile + 1);
            tc::cpAsyncCommit();
            tc::cpAsyncWait<1>(); // Q and this tile have landed; the next may still be in flight
        }
        else
            tc::cpAsyncWait<0>();
        __syncthreads();
        if (tile == 0)
        {
#pragma unroll
            for (int kk = 0; kk < kDim / 16; ++kk)
                if (kk * 16 < D)
                    tc::ldmatrixX4(qf[kk], qs + (warp * 16 + lrow) * ld + kk * 16 + lcol);
        }
        const T* ks = kvs + (tile % 2) * 2 * kBK * ld;
        const T* vs = ks + kBK * ld;
        const int64_t k0 = kBegin + tile * kBK;

        float s[kBK / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < kDim / 16; ++kk)
        {
            if (kk * 16 >= D)
                break;
            tc::mmaColMajorB<T>(s, qf[kk], ks + kk * 16, ld, [](uint32_t b) { return b; });
        }
#pragma unroll
        for (int j = 0; j < kBK / 8; ++j)
        {
#pragma unroll
            for (int r = 0; r < 4; ++r)
            {
                const int row = r0 + 8 * (r / 2);
                const int64_t key = k0 + 8 * j + 2 * t + r % 2;
                const bool kept = row < rows && key < kEnd && keep(row, key);
                const float x = kept ? fmaxf(s[j][r] * scale + bias(row, key), 0.f) : 0.f;
                s[j][r] = x * x;
            }
        }
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk)
        {
            uint32_t a[4];
            tc::scoresAsA<T>(a, s, kk);
            tc::mmaRowMajorB<T>(o, a, vs + kk * 16 * ld, ld, E);
        }
        __syncthreads(); // every warp is done with this stage before the load after next reuses it
    }
}

// Hands this thread's finished outputs to the op: write(r, e, v0, v1) for query r of the tile (below
// rows) and columns e, e + 1 (e even, below E).
template <int kDim, typename Write>
__device__ __forceinline__ void forEachOutputPair(int rows, int E, const Output<kDim>& o, Write write)
{
    const int lane = threadIdx.x % 32;
    const int r0 = (threadIdx.x / 32) * 16 + lane / 4;
#pragma unroll
    for (int j = 0; j < kDim / 8; ++j)
    {
        const int e = 8 * j + 2 * (lane % 4);
        if (e >= E)
            break;
        if (r0 < rows)
            write(r0, e, o[j][0], o[j][1]);
        if (r0 + 8 < rows)
            write(r0 + 8, e, o[j][2], o[j][3]);
    }
}

// f(std::integral_constant<int, kDim>{}) for the narrowest register tile that holds D and E.
template <typename F>
int withDimFor(int D, int E, F f)
{
    if ((D > E ? D : E) <= 64)
        return f(std::integral_constant<int, 64>{});
    return f(std::integral_constant<int, 128>{});
}

// Launches kernel<<<BH·tiles, kThreads, sharedBytes<T>(D, E)>>>(args...) (launchQueryTiles).
template <typename T, typename... KernelArgs, typename... Args>
int launch(void (*kernel)(KernelArgs...), int64_t BH, int64_t N, int D, int E, cudaStream_t stream, Args... args)
{
    return launchQueryTiles<kBQ>(kernel, BH, N, kThreads, sharedBytes<T>(D, E), stream, args...);
}

} // namespace relu2mma
} // namespace attnx
