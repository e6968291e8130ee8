// ReluSquaredAttention kernels (float32 accumulation; float32/float16/bfloat16 I/O), with the optional
// bias read in place (broadcast axes by stride 0, never expanded). float16 and bfloat16 with head dims
// that are multiples of 16 up to 128 run on tensor cores (reluSquaredMma.cuh); float32 and other head
// dims on the CUDA-core relu² core of reluSquaredTiles.cuh. Either way every key is visited in tiles;
// under causal the walk stops at the tile holding the block's last query (tiles above the diagonal
// are skipped) and the diagonal tile is masked.
//
// The length norm is a per-row factor, applied once to the finished float32 row: relu(s·qk)²/L
// (outside) and relu(s·qk/L)² = relu(s·qk)²/L² (inside) differ from the reference only in float
// rounding.
#include "reluSquaredAttentionKernel.h"

#include "attnx_generated/reluSquaredAttentionParams.h"
#include "reluSquaredMma.cuh"
#include "reluSquaredTiles.cuh"

#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>

namespace
{

using namespace attnx::relu2;
using attnx::fromFloat;
using attnx::ReluSquaredAttentionParams;
using attnx::toFloat;

constexpr int kMaxDim = ATTNX_RELU_SQUARED_ATTENTION_MAX_HEAD_DIM;
static_assert(kMaxDim <= 256, "the widest tile holds head dims up to 256");

// The bias of one (b, h): element (query, key) at query·sn + key·sm from `base`; a broadcast axis has
// stride 0.
template <typename T>
struct BiasView
{
    const T* base;
    int64_t sn;
    int64_t sm;
    int64_t q0;
    __device__ __forceinline__ float operator()(int r, int64_t key) const
    {
        return toFloat(base[(q0 + r) * sn + key * sm]);
    }
};

// Element strides of a contiguous [b, h, n, m] bias broadcast to [B, H, N, M]: 0 where an axis is 1.
struct BiasStrides
{
    int64_t sb, sh, sn, sm;
};

BiasStrides biasStrides(int64_t b, int64_t h, int64_t n, int64_t m)
{
    return {b == 1 ? 0 : h * n * m, h == 1 ? 0 : n * m, n == 1 ? 0 : m, m == 1 ? 0 : 1};
}

// The factor of row `row` (its position in the sequence): 1/L outside, 1/L² inside the square.
__device__ __forceinline__ float lengthFactor(int64_t row, int64_t M, int causal, int norm, int fixedLength, int inside)
{
    float length = 1.f;
    if (norm == ReluSquaredAttentionParams::kNormN || (norm == ReluSquaredAttentionParams::kNormVisible && !causal))
        length = float(M);
    else if (norm == ReluSquaredAttentionParams::kNormVisible)
        length = float(row + 1);
    else if (norm == ReluSquaredAttentionParams::kNormFixed)
        length = float(fixedLength);
    const float inv = 1.f / length;
    return inside ? inv * inv : inv;
}

// Every query's keys 0..M−1 (under causal 0..i): the walk stops at the tile holding the block's last
// query and the diagonal tile is masked. The length norm scales each finished row once.
template <typename T, int kCap, bool kBias>
__global__ void __launch_bounds__(kThreads) reluSquaredKernel(const T* __restrict__ q, const T* __restrict__ k,
    const T* __restrict__ v, const T* __restrict__ bias, BiasStrides bs, T* __restrict__ y, int64_t H, int64_t N,
    int64_t M, int D, int E, float scale, int causal, int norm, int fixedLength, int inside)
{
    extern __shared__ float smem[];
    const attnx::QueryTile tile = queryTile<kCap>(N);
    const int64_t q0 = tile.q0;
    const int64_t kEnd = causal ? q0 + tile.rows : M; // causal: M == N and keys after the last query add nothing
    Accumulator<kCap> acc = {};
    const T* qb = q + (tile.bh * N + q0) * D;
    const T* kb = k + tile.bh * M * D;
    const T* vb = v + tile.bh * M * E;
    auto keep = [&](int, int r, int64_t key) { return !causal || key <= q0 + r; };
    if constexpr (kBias)
    {
        const BiasView<T> view{bias + (tile.bh / H) * bs.sb + (tile.bh % H) * bs.sh, bs.sn, bs.sm, q0};
        accumulateReluSquared<T, kCap>(smem, qb, kb, vb, tile, D, E, scale, 0, kEnd, keep, acc, view);
    }
    else
        accumulateReluSquared<T, kCap>(smem, qb, kb, vb, tile, D, E, scale, 0, kEnd, keep, acc);

    forEachOutputRow<kCap>(tile, E, acc, [&](int r) {
        const int64_t row = q0 + r;
        const float factor = lengthFactor(row, M, causal, norm, fixedLength, inside);
        T* yr = y + (tile.bh * N + row) * E;
        return [=](int e, float value) { yr[e] = fromFloat<T>(value * factor); };
    });
}

// The same on tensor cores (T = __half or __nv_bfloat16, relu2mma::takes(D, E)): 64 queries per block.
template <typename T, int kDim, bool kBias>
__global__ void __launch_bounds__(attnx::relu2mma::kThreads) reluSquaredMmaKernel(const T* __restrict__ q,
    const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ bias, BiasStrides bs, T* __restrict__ y,
    int64_t H, int64_t N, int64_t M, int D, int E, float scale, int causal, int norm, int fixedLength, int inside)
{
    namespace mma = attnx::relu2mma;
    extern __shared__ float4 mmaShared[]; // 16-byte aligned, as ldmatrix and cp.async need
    T* tiles = reinterpret_cast<T*>(mmaShared);
    const attnx::QueryTile tile = mma::queryTile(N);
    const int64_t q0 = tile.q0;
    const int64_t kEnd = causal ? q0 + tile.rows : M; // causal: M == N and keys after the last query add nothing
    const T* qb = q + (tile.bh * N + q0) * D;
    const T* kb = k + tile.bh * M * D;
    const T* vb = v + tile.bh * M * E;
    auto keep = [&](int r, int64_t key) { return !causal || key <= q0 + r; };
    mma::Output<kDim> o = {};
    if constexpr (kBias)
    {
        const BiasView<T> view{bias + (tile.bh / H) * bs.sb + (tile.bh % H) * bs.sh, bs.sn, bs.sm, q0};
        mma::accumulate<T, kDim>(tiles, qb, kb, vb, tile.rows, D, E, scale, 0, kEnd, keep, o, view);
    }
    else
        mma::accumulate<T, kDim>(tiles, qb, kb, vb, tile.rows, D, E, scale, 0, kEnd, keep, o);
    T* yb = y + (tile.bh * N + q0) * E;
    mma::forEachOutputPair<kDim>(tile.rows, E, o, [&](int r, int e, float a, float b) {
        const float factor = lengthFactor(q0 + r, M, causal, norm, fixedLength, inside);
        yb[int64_t(r) * E + e] = fromFloat<T>(a * factor);
        yb[int64_t(r) * E + e + 1] = fromFloat<T>(b * factor);
    });
}

template <typename T>
int launch(const void* q, const void* k, const void* v, const void* bias, BiasStrides bs, void* y, int64_t B,
    int64_t H, int64_t N, int64_t M, int D, int E, int causal, float scale, int norm, int fixedLength, int inside,
    cudaStream_t stream)
{
    namespace mma = attnx::relu2mma;
    if constexpr (!std::is_same<T, float>::value)
    {
        if (mma::takes(D, E))
            return mma::withDimFor(D, E, [&](auto dim) {
                constexpr int kDim = decltype(dim)::value;
                auto kernel = bias ? reluSquaredMmaKernel<T, kDim, true> : reluSquaredMmaKernel<T, kDim, false>;
                return mma::launch<T>(kernel, B * H, N, D, E, stream, static_cast<const T*>(q),
                    static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const T*>(bias), bs,
                    static_cast<T*>(y), H, N, M, D, E, scale, causal, norm, fixedLength, inside);
            });
    }
    // a kernel without the bias path where there is none, so the common case keeps its registers
    return withTileFor(D, E, [&](auto cap) {
        constexpr int kCap = decltype(cap)::value;
        auto kernel = bias ? reluSquaredKernel<T, kCap, true> : reluSquaredKernel<T, kCap, false>;
        return launchTiles<kCap>(kernel, B * H, N, D, E, stream, static_cast<const T*>(q), static_cast<const T*>(k),
            static_cast<const T*>(v), static_cast<const T*>(bias), bs, static_cast<T*>(y), H, N, M, D, E, scale,
            causal, norm, fixedLength, inside);
    });
}

bool broadcastsTo(int64_t have, int64_t full)
{
    return have == 1 || have == full;
}

} // namespace

extern "C" int attnx_relu_squared_attention_forward(const void* q, const void* k, const void* v, const void* bias,
    int64_t bias_b, int64_t bias_h, int64_t bias_n, int64_t bias_m, void* y, int64_t B, int64_t H, int64_t N,
    int64_t M, int64_t D, int64_t E, int32_t causal, float scale, int32_t norm, int32_t fixed_length,
    int32_t norm_placement, int32_t dtype, void* stream)
{
    if (B < 1 || H < 1 || N < 1 || M < 1 || D < 1 || E < 1 || (causal && M != N))
        return ATTNX_ERR_SHAPE;
    if (bias
        && !(broadcastsTo(bias_b, B) && broadcastsTo(bias_h, H) && broadcastsTo(bias_n, N) && broadcastsTo(bias_m, M)))
        return ATTNX_ERR_SHAPE;
    if (D > kMaxDim || E > kMaxDim)
        return ATTNX_ERR_HEAD_DIM;
    // kernels index positions in int64 but the grid counts b·h·tiles in 31 bits
    if (B > 0x7fffffffLL || H > 0x7fffffffLL || B * H > 0x7fffffffLL || N > 0x7fffffffLL || M > 0x7fffffffLL)
        return ATTNX_ERR_SHAPE;
    if (!ReluSquaredAttentionParams{causal, scale, norm, fixed_length, norm_placement}.valid())
        return ATTNX_ERR_ATTRIBUTE;
    const float s = scale > 0.f ? scale : 1.f / std::sqrt(float(D));
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const int d = int(D);
    const int e = int(E);
    const int inside = norm_placement == ReluSquaredAttentionParams::kNormPlacementInside;
    const BiasStrides bs = bias ? biasStrides(bias_b, bias_h, bias_n, bias_m) : BiasStrides{0, 0, 0, 0};
    switch (dtype)
    {
    case ATTNX_DTYPE_FLOAT32:
        return launch<float>(q, k, v, bias, bs, y, B, H, N, M, d, e, causal, s, norm, fixed_length, inside, st);
    case ATTNX_DTYPE_FLOAT16:
        return launch<__half>(q, k, v, bias, bs, y, B, H, N, M, d, e, causal, s, norm, fixed_length, inside, st);
    case ATTNX_DTYPE_BFLOAT16:
        return launch<__nv_bfloat16>(q, k, v, bias, bs, y, B, H, N, M, d, e, causal, s, norm, fixed_length, inside,
            st);
    default: return ATTNX_ERR_DTYPE;
    }
}
