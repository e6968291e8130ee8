// MixedChunkAttention kernels (float32 accumulation and chunk states; float32/float16/bfloat16 I/O).
//
// The linear part goes first, into a float32 workspace lin [B,H,N,E]:
//   non-causal: stateKernel forms the state Σ_j k'_j v_jᵀ [S,E] per (b, h); linKernel<false> then
//     computes lin_i = s_l · q'_iᵀ state for row blocks in parallel;
//   causal: linKernel<true> walks the rows in order per (b, h, e-tile) with the state in float32
//     registers; a chunk's rows add into a pending state that joins the state when the chunk ends,
//     so every row sees the chunks before its own (the exclusive prefix).
// quadKernel then adds the quadratic part with a relu² core: one block per query tile walks only
// the keys of the chunks its queries lie in (and under causal none past its last query), forms
// relu(s_q·qkᵀ + b)² masked to the query's own chunk (b the optional in-chunk bias, read in place at
// the query's and the key's positions inside their chunk, broadcast axes by stride 0), adds scores·V
// in float32 registers, and writes
// y = quadratic + lin. float16 and bfloat16 with S and E multiples of 16 up to 128 use the
// tensor-core core of reluSquaredMma.cuh, the rest the CUDA-core core of reluSquaredTiles.cuh. The
// short last chunk is what the reference's zero padding computes: padded keys contribute zero to both
// parts.
#include "mixedChunkAttentionKernel.h"

#include "attnx_generated/mixedChunkAttentionParams.h"
#include "reluSquaredMma.cuh"
#include "reluSquaredTiles.cuh"

#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>

namespace
{

constexpr int kMaxDim = ATTNX_MIXED_CHUNK_ATTENTION_MAX_HEAD_DIM;
constexpr int kThreads = 256; // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kETile = 32;                   // linKernel: output columns per block, one lane each
constexpr int kSPerThread = kMaxDim / kWarps; // linKernel: warp w holds state rows d = w, w+8, ...
constexpr int kLinRows = 8;                  // linKernel: rows per step
constexpr int kLinRowsPerBlock = 64;         // non-causal linKernel: rows per block
constexpr int kStateRows = 16;               // stateKernel: rows staged per step

namespace relu2 = attnx::relu2;
using attnx::fromFloat;
using attnx::toFloat;

// Non-causal state[bh][d][e] = Σ_j k'_j[d] v_j[e]: one block per (b·h, kThreads state entries).
template <typename T>
__global__ void __launch_bounds__(kThreads) stateKernel(
    const T* __restrict__ lk, const T* __restrict__ v, float* __restrict__ state, int64_t N, int S, int E)
{
    __shared__ float ks[kStateRows][kMaxDim];
    __shared__ float vs[kStateRows][kMaxDim];
    const int64_t bh = blockIdx.x;
    const int64_t idx = int64_t(blockIdx.y) * kThreads + threadIdx.x;
    const bool active = idx < int64_t(S) * E;
    const int d = active ? int(idx / E) : 0;
    const int e = active ? int(idx % E) : 0;
    const T* kb = lk + bh * N * S;
    const T* vb = v + bh * N * E;
    float acc = 0.f;
    for (int64_t j0 = 0; j0 < N; j0 += kStateRows)
    {
        const int rows = int(N - j0 < kStateRows ? N - j0 : kStateRows);
        __syncthreads(); // the previous step's readers of ks and vs are done
        for (int t = threadIdx.x; t < rows * S; t += kThreads)
            ks[t / S][t % S] = toFloat(kb[(j0 + t / S) * S + t % S]);
        for (int t = threadIdx.x; t < rows * E; t += kThreads)
            vs[t / E][t % E] = toFloat(vb[(j0 + t / E) * E + t % E]);
        __syncthreads();
        if (active)
            for (int r = 0; r < rows; ++r)
                acc = fmaf(ks[r][d], vs[r][e], acc);
    }
    if (active)
        state[bh * S * E + idx] = acc;
}

// lin[bh][i][e] = s_l · Σ_d q'_i[d] state[d][e]. grid (b·h, e-tile, row block); thread (warp w, lane)
// holds state[d][e0 + lane] for d ≡ w (mod 8). Non-causal: the state is `total`, rows
// [z·64, z·64 + 64). Causal: the state starts at zero and every row of the sequence is visited in
// steps that never cross a chunk boundary.
template <typename T, bool kCausal>
__global__ void __launch_bounds__(kThreads) linKernel(const T* __restrict__ lq, const T* __restrict__ lk,
    const T* __restrict__ v, const float* __restrict__ total, float* __restrict__ lin, int64_t N, int S, int E,
    int64_t g, float sl)
{
    __shared__ float qs[kLinRows][kMaxDim];
    __shared__ float ks[kLinRows][kMaxDim];
    __shared__ float vs[kLinRows][kETile];
    __shared__ float part[kLinRows][kWarps][kETile];
    const int64_t bh = blockIdx.x;
    const int lane = threadIdx.x % kETile;
    const int w = threadIdx.x / kETile;
    const int e0 = blockIdx.y * kETile;
    const bool eOk = e0 + lane < E;

    float st[kSPerThread];
    float pending[kSPerThread];
#pragma unroll
    for (int t = 0; t < kSPerThread; ++t)
    {
        const int d = w + kWarps * t;
        st[t] = (!kCausal && d < S && eOk) ? total[(bh * S + d) * E + e0 + lane] : 0.f;
        pending[t] = 0.f;
    }

    const int64_t rowBegin = kCausal ? 0 : int64_t(blockIdx.z) * kLinRowsPerBlock;
    const int64_t rowEnd = kCausal ? N : (rowBegin + kLinRowsPerBlock < N ? rowBegin + kLinRowsPerBlock : N);
    const T* qb = lq + bh * N * S;
    const T* kb = lk + bh * N * S; // read only when causal
    const T* vb = v + bh * N * E;  // read only when causal
    float* lb = lin + bh * N * E;
    for (int64_t r0 = rowBegin; r0 < rowEnd;)
    {
        int64_t r1 = r0 + kLinRows < rowEnd ? r0 + kLinRows : rowEnd;
        if (kCausal)
        {
            const int64_t chunkEnd = (r0 / g + 1) * g;
            r1 = r1 < chunkEnd ? r1 : chunkEnd;
        }
        const int rows = int(r1 - r0);
        // qs, ks and vs were last read before the previous step's second barrier, part is next
        // written after this step's first: two barriers per step suffice
        for (int t = threadIdx.x; t < rows * S; t += kThreads)
        {
            const int r = t / S;
            const int c = t - r * S;
            qs[r][c] = toFloat(qb[(r0 + r) * S + c]);
            if (kCausal)
                ks[r][c] = toFloat(kb[(r0 + r) * S + c]);
        }
        if (kCausal)
        {
            for (int t = threadIdx.x; t < rows * kETile; t += kThreads)
            {
                const int r = t / kETile;
                const int c = t - r * kETile;
                vs[r][c] = e0 + c < E ? toFloat(vb[(r0 + r) * E + e0 + c]) : 0.f;
            }
        }
        __syncthreads();
        for (int r = 0; r < rows; ++r)
        {
            float p = 0.f;
#pragma unroll
            for (int t = 0; t < kSPerThread; ++t)
            {
                const int d = w + kWarps * t;
                if (d < S)
                    p = fmaf(qs[r][d], st[t], p);
            }
            part[r][w][lane] = p;
            if (kCausal)
            {
#pragma unroll
                for (int t = 0; t < kSPerThread; ++t)
                {
                    const int d = w + kWarps * t;
                    if (d < S)
                        pending[t] = fmaf(ks[r][d], vs[r][lane], pending[t]);
                }
            }
        }
        __syncthreads();
        for (int t = threadIdx.x; t < rows * kETile; t += kThreads)
        {
            const int r = t / kETile;
            const int c = t - r * kETile;
            if (e0 + c < E)
            {
                float sum = 0.f;
#pragma unroll
                for (int ww = 0; ww < kWarps; ++ww)
                    sum += part[r][ww][c];
                lb[(r0 + r) * E + e0 + c] = sl * sum;
            }
        }
        if (kCausal && r1 % g == 0)
        {
            // the chunk is complete: later chunks see it
#pragma unroll
            for (int t = 0; t < kSPerThread; ++t)
            {
                st[t] += pending[t];
                pending[t] = 0.f;
            }
        }
        r0 = r1;
    }
}

// Element strides of a contiguous [b, h, n, m] bias broadcast to [B, H, g, g]: 0 where an axis is 1.
struct BiasStrides
{
    int64_t sb, sh, sn, sm;
};

BiasStrides biasStrides(int64_t b, int64_t h, int64_t n, int64_t m)
{
    return {b == 1 ? 0 : h * n * m, h == 1 ? 0 : n * m, n == 1 ? 0 : m, m == 1 ? 0 : 1};
}

// The in-chunk bias of one (b, h): for query q0 + r and key `key` of the same chunk, the element at
// their positions inside the chunk.
template <typename T>
struct ChunkBias
{
    const T* base;
    int64_t sn;
    int64_t sm;
    int64_t q0;
    int64_t g;
    __device__ __forceinline__ float operator()(int r, int64_t key) const
    {
        return toFloat(base[((q0 + r) % g) * sn + (key % g) * sm]);
    }
};

template <typename T>
__device__ __forceinline__ ChunkBias<T> chunkBias(const T* bias, BiasStrides bs, int64_t bh, int64_t H, int64_t q0,
    int64_t g)
{
    return {bias + (bh / H) * bs.sb + (bh % H) * bs.sh, bs.sn, bs.sm, q0, g};
}

// The keys a tile of `rows` queries from q0 needs: those of the chunks its queries lie in, and under
// causal none past its last query.
struct KeyRange
{
    int64_t begin;
    int64_t end;
};

__device__ __forceinline__ KeyRange chunkKeys(int64_t q0, int rows, int64_t g, int64_t N, int causal)
{
    int64_t end = ((q0 + rows - 1) / g + 1) * g;
    end = end < N ? end : N;
    if (causal && end > q0 + rows)
        end = q0 + rows;
    return {q0 / g * g, end};
}

// y = relu(s_q·q_i·k_j + b)² v_j over j in i's chunk (j <= i when causal) + lin_i: the tiled relu²
// core of reluSquaredTiles.cuh over the keys of the chunks from the tile's first query's to its last
// query's (causal: none past the last query), masked to each query's own chunk. kBias: b is read from
// `bias`; without it the core adds nothing.
template <typename T, int kCap, bool kBias>
__global__ void __launch_bounds__(relu2::kThreads) quadKernel(const T* __restrict__ qq, const T* __restrict__ qk,
    const T* __restrict__ v, const T* __restrict__ bias, BiasStrides bs, const float* __restrict__ lin,
    T* __restrict__ y, int64_t H, int64_t N, int S, int E, int64_t g, float sq, int causal)
{
    constexpr int kSR = relu2::Tile<kCap>::kSR;
    extern __shared__ float smem[];
    const attnx::QueryTile tile = relu2::queryTile<kCap>(N);
    const int64_t q0 = tile.q0;
    const KeyRange keys = chunkKeys(q0, tile.rows, g, N, causal);
    const int ty = threadIdx.x / 16; // the score rows of this thread: ty + 16i
    int64_t chunkStart[kSR];         // of each score row's query
#pragma unroll
    for (int i = 0; i < kSR; ++i)
        chunkStart[i] = (q0 + ty + 16 * i) / g * g;
    relu2::Accumulator<kCap> acc = {};
    auto keep = [&](int i, int r, int64_t key) {
        return key >= chunkStart[i] && key < chunkStart[i] + g && (!causal || key <= q0 + r);
    };
    const T* qb = qq + (tile.bh * N + q0) * S;
    const T* kb = qk + tile.bh * N * S;
    const T* vb = v + tile.bh * N * E;
    if constexpr (kBias)
        relu2::accumulateReluSquared<T, kCap>(smem, qb, kb, vb, tile, S, E, sq, keys.begin, keys.end, keep, acc,
            chunkBias(bias, bs, tile.bh, H, q0, g));
    else
        relu2::accumulateReluSquared<T, kCap>(smem, qb, kb, vb, tile, S, E, sq, keys.begin, keys.end, keep, acc);

    relu2::forEachOutputRow<kCap>(tile, E, acc, [&](int r) {
        const int64_t offset = (tile.bh * N + q0 + r) * E;
        return [=](int e, float value) { y[offset + e] = fromFloat<T>(value + lin[offset + e]); };
    });
}

// quadKernel on tensor cores (T = __half or __nv_bfloat16, relu2mma::takes(S, E)): 64 queries per block.
template <typename T, int kDim, bool kBias>
__global__ void __launch_bounds__(attnx::relu2mma::kThreads) quadMmaKernel(const T* __restrict__ qq,
    const T* __restrict__ qk, const T* __restrict__ v, const T* __restrict__ bias, BiasStrides bs,
    const float* __restrict__ lin, T* __restrict__ y, int64_t H, int64_t N, int S, int E, int64_t g, float sq,
    int causal)
{
    namespace mma = attnx::relu2mma;
    extern __shared__ float4 mmaShared[]; // 16-byte aligned, as ldmatrix and cp.async need
    const attnx::QueryTile tile = mma::queryTile(N);
    const int64_t q0 = tile.q0;
    const KeyRange keys = chunkKeys(q0, tile.rows, g, N, causal);
    auto keep = [&](int r, int64_t key) {
        const int64_t chunkStart = (q0 + r) / g * g;
        return key >= chunkStart && key < chunkStart + g && (!causal || key <= q0 + r);
    };
    mma::Output<kDim> o = {};
    T* tiles = reinterpret_cast<T*>(mmaShared);
    const T* qb = qq + (tile.bh * N + q0) * S;
    const T* kb = qk + tile.bh * N * S;
    const T* vb = v + tile.bh * N * E;
    if constexpr (kBias)
        mma::accumulate<T, kDim>(tiles, qb, kb, vb, tile.rows, S, E, sq, keys.begin, keys.end, keep, o,
            chunkBias(bias, bs, tile.bh, H, q0, g));
    else
        mma::accumulate<T, kDim>(tiles, qb, kb, vb, tile.rows, S, E, sq, keys.begin, keys.end, keep, o);
    const int64_t base = (tile.bh * N + q0) * E;
    mma::forEachOutputPair<kDim>(tile.rows, E, o, [&](int r, int e, float a, float b) {
        const int64_t at = base + int64_t(r) * E + e;
        y[at] = fromFloat<T>(a + lin[at]);
        y[at + 1] = fromFloat<T>(b + lin[at + 1]);
    });
}

template <typename T>
int launch(const void* quadQ, const void* quadK, const void* linQ, const void* linK, const void* v,
    const void* biasIn, BiasStrides bs, void* y, void* workspace, int64_t BH, int64_t H, int64_t N, int S, int E,
    int causal, int64_t g, float sq, float sl, cudaStream_t stream)
{
    const T* qq = static_cast<const T*>(quadQ);
    const T* qk = static_cast<const T*>(quadK);
    const T* lq = static_cast<const T*>(linQ);
    const T* lk = static_cast<const T*>(linK);
    const T* vt = static_cast<const T*>(v);
    const T* bias = static_cast<const T*>(biasIn);
    T* yt = static_cast<T*>(y);
    float* lin = static_cast<float*>(workspace);
    const unsigned eTiles = unsigned((E + kETile - 1) / kETile);
    if (causal)
    {
        linKernel<T, true><<<dim3(unsigned(BH), eTiles, 1), kThreads, 0, stream>>>(
            lq, lk, vt, nullptr, lin, N, S, E, g, sl);
    }
    else
    {
        float* state = lin + BH * N * E;
        const unsigned stateTiles = unsigned((int64_t(S) * E + kThreads - 1) / kThreads);
        stateKernel<T><<<dim3(unsigned(BH), stateTiles, 1), kThreads, 0, stream>>>(lk, vt, state, N, S, E);
        const unsigned rowBlocks = unsigned((N + kLinRowsPerBlock - 1) / kLinRowsPerBlock);
        linKernel<T, false><<<dim3(unsigned(BH), eTiles, rowBlocks), kThreads, 0, stream>>>(
            lq, nullptr, nullptr, state, lin, N, S, E, g, sl);
    }
    if (cudaGetLastError() != cudaSuccess)
        return ATTNX_ERR_CUDA;
    namespace mma = attnx::relu2mma;
    if constexpr (!std::is_same<T, float>::value)
    {
        if (mma::takes(S, E))
            return mma::withDimFor(S, E, [&](auto dim) {
                constexpr int kDim = decltype(dim)::value;
                // a kernel without the bias path where there is none, so the common case keeps its registers
                auto kernel = bias ? quadMmaKernel<T, kDim, true> : quadMmaKernel<T, kDim, false>;
                return mma::launch<T>(kernel, BH, N, S, E, stream, qq, qk, vt, bias, bs,
                    static_cast<const float*>(lin), yt, H, N, S, E, g, sq, causal);
            });
    }
    return relu2::withTileFor(S, E, [&](auto cap) {
        constexpr int kCap = decltype(cap)::value;
        auto kernel = bias ? quadKernel<T, kCap, true> : quadKernel<T, kCap, false>;
        return relu2::launchTiles<kCap>(kernel, BH, N, S, E, stream, qq, qk, vt, bias, bs,
            static_cast<const float*>(lin), yt, H, N, S, E, g, sq, causal);
    });
}

} // namespace

extern "C" size_t attnx_mixed_chunk_attention_workspace_size(
    int64_t B, int64_t H, int64_t N, int64_t S, int64_t E, int32_t causal)
{
    if (B < 1 || H < 1 || N < 1 || S < 1 || E < 1)
        return 0;
    return size_t(B * H * (N * E + (causal ? 0 : S * E))) * sizeof(float);
}

extern "C" int attnx_mixed_chunk_attention_forward(const void* quad_q, const void* quad_k, const void* lin_q,
    const void* lin_k, const void* v, const void* bias, int64_t bias_b, int64_t bias_h, int64_t bias_n,
    int64_t bias_m, void* y, void* workspace, int64_t B, int64_t H, int64_t N, int64_t S, int64_t E, int32_t causal,
    int32_t chunk_size, float quad_scale, float lin_scale, int32_t dtype, void* stream)
{
    if (B < 1 || H < 1 || N < 1 || S < 1 || E < 1)
        return ATTNX_ERR_SHAPE;
    if (S > kMaxDim || E > kMaxDim)
        return ATTNX_ERR_HEAD_DIM;
    // grid x counts b·h (and b·h·tiles) in 31 bits; grid z counts non-causal row blocks up to 65535
    if (B > 0x7fffffffLL || H > 0x7fffffffLL || B * H > 0x7fffffffLL || N > 0x7fffffffLL
        || (N + kLinRowsPerBlock - 1) / kLinRowsPerBlock > 65535)
        return ATTNX_ERR_SHAPE;
    if (!attnx::MixedChunkAttentionParams{causal, chunk_size, quad_scale, lin_scale}.valid())
        return ATTNX_ERR_ATTRIBUTE;
    const int64_t g = chunk_size;
    auto fits = [](int64_t have, int64_t full) { return have == 1 || have == full; };
    if (bias && !(fits(bias_b, B) && fits(bias_h, H) && fits(bias_n, g) && fits(bias_m, g)))
        return ATTNX_ERR_SHAPE;
    if (!workspace)
        return ATTNX_ERR_WORKSPACE;
    const BiasStrides bs = bias ? biasStrides(bias_b, bias_h, bias_n, bias_m) : BiasStrides{0, 0, 0, 0};
    const float sq = quad_scale > 0.f ? quad_scale : 1.f / float(chunk_size);
    const float sl = lin_scale > 0.f ? lin_scale : (causal ? 1.f / float(chunk_size) : 1.f / float(N));
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const int s = int(S);
    const int e = int(E);
    switch (dtype)
    {
    case ATTNX_DTYPE_FLOAT32:
        return launch<float>(quad_q, quad_k, lin_q, lin_k, v, bias, bs, y, workspace, B * H, H, N, s, e,
            causal, g, sq, sl, st);
    case ATTNX_DTYPE_FLOAT16:
        return launch<__half>(quad_q, quad_k, lin_q, lin_k, v, bias, bs, y, workspace, B * H, H, N, s, e,
            causal, g, sq, sl, st);
    case ATTNX_DTYPE_BFLOAT16:
        return launch<__nv_bfloat16>(quad_q, quad_k, lin_q, lin_k, v, bias, bs, y, workspace, B * H, H, N, s, e,
            causal, g, sq, sl, st);
    default: return ATTNX_ERR_DTYPE;
    }
}
