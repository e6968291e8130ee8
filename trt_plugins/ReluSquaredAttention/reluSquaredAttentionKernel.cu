// ReluSquaredAttention kernel (float32 accumulation; float32/float16/bfloat16 I/O): the tiled relu²
// core of reluSquaredTiles.cuh over every key. Under causal the walk stops at the tile holding the
// block's last query (tiles above the diagonal are skipped) and the diagonal tile is masked.
//
// The length norm is a per-row factor, applied once to the finished row: relu(s·qk)²/L (outside)
// and relu(s·qk/L)² = relu(s·qk)²/L² (inside) differ from the reference only in float rounding.
#include "reluSquaredAttentionKernel.h"

#include "reluSquaredTiles.cuh"

#include <cuda_runtime.h>

#include <cmath>

namespace
{

using namespace attnx::relu2;
using attnx::fromFloat;

constexpr int kMaxDim = ATTNX_RELU_SQUARED_ATTENTION_MAX_HEAD_DIM;
static_assert(kMaxDim <= 256, "the widest tile holds head dims up to 256");

// Every query's keys 0..M−1 (under causal 0..i): the walk stops at the tile holding the block's last
// query and the diagonal tile is masked. The length norm scales each finished row once.
template <typename T, int kCap>
__global__ void __launch_bounds__(kThreads) reluSquaredKernel(const T* __restrict__ q, const T* __restrict__ k,
    const T* __restrict__ v, T* __restrict__ y, int64_t N, int64_t M, int D, int E, float scale, int causal,
    int norm, int fixedLength, int inside)
{
    extern __shared__ float smem[];
    const QueryTile tile = queryTile<kCap>(N);
    const int64_t q0 = tile.q0;
    const int64_t kEnd = causal ? q0 + tile.rows : M; // causal: M == N and keys after the last query add nothing
    Accumulator<kCap> acc = {};
    accumulateReluSquared<T, kCap>(smem, q + (tile.bh * N + q0) * D, k + tile.bh * M * D, v + tile.bh * M * E, tile,
        D, E, scale, 0, kEnd, [&](int, int r, int64_t key) { return !causal || key <= q0 + r; }, acc);

    forEachOutputRow<kCap>(tile, E, acc, [&](int r) {
        const int64_t row = q0 + r;
        float length = 1.f;
        if (norm == ATTNX_NORM_N || (norm == ATTNX_NORM_VISIBLE && !causal))
            length = float(M);
        else if (norm == ATTNX_NORM_VISIBLE)
            length = float(row + 1);
        else if (norm == ATTNX_NORM_FIXED)
            length = float(fixedLength);
        const float inv = 1.f / length;
        const float factor = inside ? inv * inv : inv;
        T* yr = y + (tile.bh * N + row) * E;
        return [=](int e, float value) { yr[e] = fromFloat<T>(value * factor); };
    });
}

template <typename T>
int launch(const void* q, const void* k, const void* v, void* y, int64_t BH, int64_t N, int64_t M, int D, int E,
    int causal, float scale, int norm, int fixedLength, int inside, cudaStream_t stream)
{
    return withTileFor(D, E, [&](auto cap) {
        constexpr int kCap = decltype(cap)::value;
        return launchTiles<kCap>(reluSquaredKernel<T, kCap>, BH, N, D, E, stream, static_cast<const T*>(q),
            static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(y), N, M, D, E, scale, causal, norm,
            fixedLength, inside);
    });
}

} // namespace

extern "C" int attnx_relu_squared_attention_forward(const void* q, const void* k, const void* v, void* y, int64_t B,
    int64_t H, int64_t N, int64_t M, int64_t D, int64_t E, int32_t causal, float scale, int32_t norm,
    int32_t fixed_length, int32_t norm_placement, int32_t dtype, void* stream)
{
    if (B < 1 || H < 1 || N < 1 || M < 1 || D < 1 || E < 1 || (causal && M != N))
        return ATTNX_ERR_SHAPE;
    if (D > kMaxDim || E > kMaxDim)
        return ATTNX_ERR_HEAD_DIM;
    // kernels index positions in int64 but the grid counts b·h·tiles in 31 bits
    if (B > 0x7fffffffLL || H > 0x7fffffffLL || B * H > 0x7fffffffLL || N > 0x7fffffffLL || M > 0x7fffffffLL)
        return ATTNX_ERR_SHAPE;
    if ((causal != 0 && causal != 1) || !std::isfinite(scale) || scale < 0.f || norm < ATTNX_NORM_N
        || norm > ATTNX_NORM_NONE || fixed_length < 1 || (norm_placement != ATTNX_NORM_OUTSIDE
        && norm_placement != ATTNX_NORM_INSIDE))
        return ATTNX_ERR_ATTRIBUTE;
    const float s = scale > 0.f ? scale : 1.f / std::sqrt(float(D));
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const int d = int(D);
    const int e = int(E);
    const int inside = norm_placement == ATTNX_NORM_INSIDE;
    switch (dtype)
    {
    case ATTNX_DTYPE_FLOAT32:
        return launch<float>(q, k, v, y, B * H, N, M, d, e, causal, s, norm, fixed_length, inside, st);
    case ATTNX_DTYPE_FLOAT16:
        return launch<__half>(q, k, v, y, B * H, N, M, d, e, causal, s, norm, fixed_length, inside, st);
    case ATTNX_DTYPE_BFLOAT16:
        return launch<__nv_bfloat16>(q, k, v, y, B * H, N, M, d, e, causal, s, norm, fixed_length, inside, st);
    default: return ATTNX_ERR_DTYPE;
    }
}
