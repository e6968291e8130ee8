// LinearAttention kernels (float32 accumulation; float32/float16/bfloat16 I/O).
//
// Non-causal: stateKernel forms S = S0 + Σ_j φ(k_j) v_jᵀ and z = z0 + Σ_j φ(k_j) per (b, h), then
// rowKernel computes y_i = φ(q_i)ᵀS / (φ(q_i)ᵀz + eps) with the normaliser fused in the same pass.
// Causal: a chunked scan in three launches, parallel over (b, h, chunk of 64 rows): the float32 state
// of each chunk, an exclusive prefix over chunks (input state added; the total is the state output),
// then per chunk the masked 64 × 64 product φ(Q)φ(K)ᵀ with V plus φ(Q) times the state before it.
// Causal float16/bfloat16 with D a multiple of 16 up to 64 and E a multiple of 16 runs on tensor cores
// instead (causalMmaKernel): one pass, each block walking the whole sequence of one (b, h) with the
// state in shared memory.
// The kernel's chunk is fixed at 64 rows; the chunk_size attribute tiles the ONNX body only (it has
// no effect on results). Lengths that are not a multiple of 64 end in a short chunk.
#include "linearAttentionKernel.h"

#include "attnx_generated/linearAttentionParams.h"
#include "kernelCommon.cuh"
#include "tensorCore.cuh"

#include <cuda_runtime.h>

#include <type_traits>

namespace
{

constexpr int kMaxDim = ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM;
constexpr int kETile = 32;                  // output columns per block: one warp lane each
constexpr int kDGroups = 8;                 // warps per block; warp g owns d = g, g+8, g+16, ...
constexpr int kThreads = kETile * kDGroups; // 256
constexpr int kDPerThread = kMaxDim / kDGroups; // 32 registers of S per thread
constexpr int kRowsPerBlock = 64;           // non-causal rows per block
constexpr int kStateRows = 16;              // keys staged in shared memory per step of stateKernel

using attnx::addOuterProduct;
using attnx::fromFloat;
using attnx::LinearAttentionParams;
using attnx::toFloat;

__device__ __forceinline__ float phi(float x, int fm)
{
    if (fm == LinearAttentionParams::kFeatureMapElu)
        return x > 0.f ? x + 1.f : __expf(x); // elu(x) + 1 = exp(x) for x <= 0
    if (fm == LinearAttentionParams::kFeatureMapRelu)
        return fmaxf(x, 0.f);
    return x;
}

// One block per (b·h, tile of kThreads elements of S [D, E]); keys staged kStateRows at a time.
template <typename T>
__global__ void stateKernel(const T* __restrict__ k, const T* __restrict__ v, const float* __restrict__ s0,
    const float* __restrict__ z0, float* __restrict__ sOut, float* __restrict__ zOut, int64_t M, int D, int E, int fm)
{
    __shared__ float fk[kStateRows][kMaxDim];
    __shared__ float vs[kStateRows][kMaxDim];
    const int64_t bh = blockIdx.x;
    const int64_t idx = int64_t(blockIdx.y) * kThreads + threadIdx.x;
    const bool active = idx < int64_t(D) * E;
    const int d = active ? int(idx / E) : 0;
    const int e = active ? int(idx % E) : 0;
    const T* kb = k + bh * M * D;
    const T* vb = v + bh * M * E;
    float s = (active && s0) ? s0[bh * D * E + idx] : 0.f;
    float z = (active && e == 0 && z0) ? z0[bh * D + d] : 0.f;
    for (int64_t j0 = 0; j0 < M; j0 += kStateRows)
    {
        const int rows = int((M - j0 < kStateRows ? M - j0 : kStateRows));
        __syncthreads();
        for (int t = threadIdx.x; t < rows * D; t += kThreads)
            fk[t / D][t % D] = phi(toFloat(kb[(j0 + t / D) * D + t % D]), fm);
        for (int t = threadIdx.x; t < rows * E; t += kThreads)
            vs[t / E][t % E] = toFloat(vb[(j0 + t / E) * E + t % E]);
        __syncthreads();
        if (active)
        {
            for (int r = 0; r < rows; ++r)
            {
                s = fmaf(fk[r][d], vs[r][e], s);
                if (e == 0)
                    z += fk[r][d];
            }
        }
    }
    if (active)
    {
        sOut[bh * D * E + idx] = s;
        if (e == 0)
            zOut[bh * D + d] = z; // each d has e == 0 in exactly one thread
    }
}

// grid (b·h, e-tile, row-chunk). Thread (g = warp, lane) holds S[d][e0 + lane] for d ≡ g (mod 8),
// read from sIn/zIn (the full sums, input state included); rows [chunk·64, +64).
template <typename T>
__global__ void __launch_bounds__(kThreads) rowKernel(const T* __restrict__ q, const float* __restrict__ sIn,
    const float* __restrict__ zIn, T* __restrict__ y, int64_t N, int D, int E, int fm, int normalize, float eps)
{
    __shared__ float fq[kMaxDim];
    __shared__ float num[kDGroups][kETile];
    __shared__ float den[kDGroups][kETile];
    const int64_t bh = blockIdx.x;
    const int lane = threadIdx.x % kETile;
    const int g = threadIdx.x / kETile;
    const int e = blockIdx.y * kETile + lane;
    const bool eOk = e < E;

    float s[kDPerThread];
    float z[kDPerThread];
#pragma unroll
    for (int t = 0; t < kDPerThread; ++t)
    {
        const int d = g + t * kDGroups;
        s[t] = (d < D && eOk) ? sIn[(bh * D + d) * E + e] : 0.f;
        z[t] = d < D ? zIn[bh * D + d] : 0.f;
    }

    const int64_t rowBegin = int64_t(blockIdx.z) * kRowsPerBlock;
    const int64_t rowEnd = rowBegin + kRowsPerBlock < N ? rowBegin + kRowsPerBlock : N;
    const T* qb = q + bh * N * D;
    T* yb = y + bh * N * E;
    for (int64_t i = rowBegin; i < rowEnd; ++i)
    {
        // the previous row's readers of fq finished before its second barrier
        for (int d = threadIdx.x; d < D; d += kThreads)
            fq[d] = phi(toFloat(qb[i * D + d]), fm);
        __syncthreads();
        float pn = 0.f;
        float pd = 0.f;
#pragma unroll
        for (int t = 0; t < kDPerThread; ++t)
        {
            const int d = g + t * kDGroups;
            if (d < D)
            {
                pn = fmaf(fq[d], s[t], pn);
                pd = fmaf(fq[d], z[t], pd);
            }
        }
        num[g][lane] = pn;
        den[g][lane] = pd;
        __syncthreads();
        if (g == 0 && eOk)
        {
            float a = 0.f;
            float b = 0.f;
#pragma unroll
            for (int w = 0; w < kDGroups; ++w)
            {
                a += num[w][lane];
                b += den[w][lane];
            }
            yb[i * E + e] = fromFloat<T>(normalize ? a / (b + eps) : a);
        }
        // num/den are next written after the next row's first barrier, which g == 0 also reaches
    }
}

// ---- causal: chunked scan. Chunk c holds rows [c·kChunk, +kChunk); the last one may be short.
// The workspace holds, per (b·h, chunk), kStateFloats(D, E) = D·E + D floats: first chunkStateKernel
// writes the chunk's own Σφ(k)vᵀ and Σφ(k) there, then prefixKernel turns them in place into the
// states before the chunk (input state included) and writes the final state, then chunkOutputKernel
// forms y_i = φ(q_i)ᵀ(S_prev + Σ_{j ≤ i in chunk} φ(k_j) v_jᵀ) / (φ(q_i)ᵀ(z_prev + ...) + eps).
constexpr int kChunk = 64;   // rows per chunk
constexpr int kTile = 64;    // output tile of chunkStateKernel (d × e) and chunkOutputKernel (rows × e)
constexpr int kDStep = 16;   // d columns staged per step of chunkOutputKernel
constexpr int kPrefixBatch = 8; // chunk states loaded ahead in prefixKernel
// 256 threads as 16 × 16; thread (ty, tx) owns tile rows ty·4 + i (i < 4) and columns tx + 16·m (m < 4)
constexpr int kTy = 16;
constexpr int kRowsPerThread = kTile / kTy;  // 4
constexpr int kColsPerThread = kTile / 16;   // 4

__host__ __device__ inline int64_t stateFloats(int D, int E)
{
    return int64_t(D) * E + D;
}

// grid (b·h · chunks, d-tiles · e-tiles). S_c[d][e] = Σ_j φ(k_j)[d] v_j[e] over the chunk's rows for one
// 64 × 64 tile; blocks with e-tile 0 also write z_c[d] = Σ_j φ(k_j)[d] for their d-tile.
template <typename T>
__global__ void __launch_bounds__(kThreads) chunkStateKernel(const T* __restrict__ k, const T* __restrict__ v,
    float* __restrict__ ws, int64_t N, int64_t nChunks, int D, int E, int fm)
{
    __shared__ float ks[kChunk][kTile + 1];
    __shared__ float vs[kChunk][kTile];
    const int64_t bh = blockIdx.x / nChunks;
    const int64_t c = blockIdx.x % nChunks;
    const int eTiles = (E + kTile - 1) / kTile;
    const int d0 = (blockIdx.y / eTiles) * kTile;
    const int e0 = (blockIdx.y % eTiles) * kTile;
    const int64_t r0 = c * kChunk;
    const int rows = int(N - r0 < kChunk ? N - r0 : kChunk);
    const T* kb = k + (bh * N + r0) * D;
    const T* vb = v + (bh * N + r0) * E;
    // rows past the end are zero, not φ(0) (which is 1 for elu): they add nothing
    for (int t = threadIdx.x; t < kChunk * kTile; t += kThreads)
    {
        const int j = t / kTile;
        const int x = t % kTile;
        ks[j][x] = (j < rows && d0 + x < D) ? phi(toFloat(kb[int64_t(j) * D + d0 + x]), fm) : 0.f;
        vs[j][x] = (j < rows && e0 + x < E) ? toFloat(vb[int64_t(j) * E + e0 + x]) : 0.f;
    }
    __syncthreads();
    const int ty = threadIdx.x / 16;
    const int tx = threadIdx.x % 16;
    float acc[kRowsPerThread][kColsPerThread] = {};
    for (int j = 0; j < rows; ++j)
    {
        float kv[kRowsPerThread];
        float vv[kColsPerThread];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i)
            kv[i] = ks[j][ty * kRowsPerThread + i];
#pragma unroll
        for (int m = 0; m < kColsPerThread; ++m)
            vv[m] = vs[j][tx + 16 * m];
        addOuterProduct(acc, kv, vv);
    }
    float* out = ws + (bh * nChunks + c) * stateFloats(D, E);
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i)
    {
        const int d = d0 + ty * kRowsPerThread + i;
#pragma unroll
        for (int m = 0; m < kColsPerThread; ++m)
        {
            const int e = e0 + tx + 16 * m;
            if (d < D && e < E)
                out[int64_t(d) * E + e] = acc[i][m];
        }
    }
    if (e0 == 0 && threadIdx.x < kTile && d0 + int(threadIdx.x) < D)
    {
        float z = 0.f;
        for (int j = 0; j < rows; ++j)
            z += ks[j][threadIdx.x];
        out[int64_t(D) * E + d0 + threadIdx.x] = z;
    }
}

// grid (b·h, ceil((D·E + D) / 256)). Element x of the per-chunk states (S then z), scanned over the
// chunks: each chunk's slot becomes the sum before it (plus the input state); the total goes to the
// state outputs when they are given.
__global__ void __launch_bounds__(kThreads) prefixKernel(float* __restrict__ ws, const float* __restrict__ s0,
    const float* __restrict__ z0, float* __restrict__ sOut, float* __restrict__ zOut, int64_t nChunks, int D, int E)
{
    const int64_t n = stateFloats(D, E);
    const int64_t x = int64_t(blockIdx.y) * kThreads + threadIdx.x;
    if (x >= n)
        return;
    const int64_t bh = blockIdx.x;
    const int64_t se = int64_t(D) * E;
    const bool isS = x < se;
    float running = isS ? (s0 ? s0[bh * se + x] : 0.f) : (z0 ? z0[bh * D + (x - se)] : 0.f);
    float* p = ws + bh * nChunks * n + x;
    for (int64_t c0 = 0; c0 < nChunks; c0 += kPrefixBatch)
    {
        // the loads of a batch do not wait for the stores before them
        float t[kPrefixBatch];
#pragma unroll
        for (int b = 0; b < kPrefixBatch; ++b)
            t[b] = c0 + b < nChunks ? p[(c0 + b) * n] : 0.f;
#pragma unroll
        for (int b = 0; b < kPrefixBatch; ++b)
        {
            if (c0 + b < nChunks)
                p[(c0 + b) * n] = running;
            running += t[b];
        }
    }
    if (isS && sOut)
        sOut[bh * se + x] = running;
    if (!isS && zOut)
        zOut[bh * D + (x - se)] = running;
}

// grid (b·h · chunks, e-tiles of 64). For the chunk's rows i and the block's 64 columns e:
// A = tril(φ(Q) φ(K)ᵀ) within the chunk (64 × 64, in shared memory), then
// y = (A V + φ(Q) S_prev) / (rowsum(A) + φ(Q) z_prev + eps).
template <typename T>
__global__ void __launch_bounds__(kThreads) chunkOutputKernel(const T* __restrict__ q, const T* __restrict__ k,
    const T* __restrict__ v, const float* __restrict__ ws, T* __restrict__ y, int64_t N, int64_t nChunks, int D,
    int E, int fm, int normalize, float eps)
{
    __shared__ float as[kChunk][kChunk + 1];
    __shared__ float qs[kChunk][kDStep + 1];
    __shared__ float ks[kChunk][kDStep + 1];
    __shared__ float vs[kChunk][kTile];
    __shared__ float ss[kDStep][kTile];
    __shared__ float zs[kDStep];
    __shared__ float den[kChunk];
    const int64_t bh = blockIdx.x / nChunks;
    const int64_t c = blockIdx.x % nChunks;
    const int e0 = blockIdx.y * kTile;
    const int64_t r0 = c * kChunk;
    const int rows = int(N - r0 < kChunk ? N - r0 : kChunk);
    const T* qb = q + (bh * N + r0) * D;
    const T* kb = k + (bh * N + r0) * D;
    const T* vb = v + (bh * N + r0) * E;
    const float* sPrev = ws + (bh * nChunks + c) * stateFloats(D, E);
    const float* zPrev = sPrev + int64_t(D) * E;
    const int ty = threadIdx.x / 16;
    const int tx = threadIdx.x % 16;

    // A = φ(Q) φ(K)ᵀ over d in steps of kDStep; thread tid < 64 also forms φ(q_tid)·z_prev
    float a[kRowsPerThread][kColsPerThread] = {};
    float qz = 0.f;
    for (int d0 = 0; d0 < D; d0 += kDStep)
    {
        for (int t = threadIdx.x; t < kChunk * kDStep; t += kThreads)
        {
            const int j = t / kDStep;
            const int x = t % kDStep;
            const bool ok = j < rows && d0 + x < D;
            qs[j][x] = ok ? phi(toFloat(qb[int64_t(j) * D + d0 + x]), fm) : 0.f;
            ks[j][x] = ok ? phi(toFloat(kb[int64_t(j) * D + d0 + x]), fm) : 0.f;
        }
        if (threadIdx.x < kDStep)
            zs[threadIdx.x] = d0 + int(threadIdx.x) < D ? zPrev[d0 + threadIdx.x] : 0.f;
        __syncthreads();
#pragma unroll
        for (int x = 0; x < kDStep; ++x)
        {
            float qv[kRowsPerThread];
            float kv[kColsPerThread];
#pragma unroll
            for (int i = 0; i < kRowsPerThread; ++i)
                qv[i] = qs[ty * kRowsPerThread + i][x];
#pragma unroll
            for (int m = 0; m < kColsPerThread; ++m)
                kv[m] = ks[tx + 16 * m][x];
            addOuterProduct(a, qv, kv);
        }
        if (threadIdx.x < kChunk)
        {
#pragma unroll
            for (int x = 0; x < kDStep; ++x)
                qz = fmaf(qs[threadIdx.x][x], zs[x], qz);
        }
        __syncthreads();
    }
    // causal mask within the chunk: key j ≤ query i (rows past the end are zero already)
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i)
    {
        const int row = ty * kRowsPerThread + i;
#pragma unroll
        for (int m = 0; m < kColsPerThread; ++m)
        {
            const int col = tx + 16 * m;
            as[row][col] = col <= row ? a[i][m] : 0.f;
        }
    }
    for (int t = threadIdx.x; t < kChunk * kTile; t += kThreads)
    {
        const int j = t / kTile;
        const int x = t % kTile;
        vs[j][x] = (j < rows && e0 + x < E) ? toFloat(vb[int64_t(j) * E + e0 + x]) : 0.f;
    }
    __syncthreads();
    if (threadIdx.x < kChunk)
    {
        float rowSum = 0.f;
        for (int j = 0; j < kChunk; ++j)
            rowSum += as[threadIdx.x][j];
        den[threadIdx.x] = rowSum + qz;
    }

    // y = A V (the chunk) + φ(Q) S_prev (the chunks before)
    float acc[kRowsPerThread][kColsPerThread] = {};
    for (int j = 0; j < rows; ++j)
    {
        float av[kRowsPerThread];
        float vv[kColsPerThread];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i)
            av[i] = as[ty * kRowsPerThread + i][j];
#pragma unroll
        for (int m = 0; m < kColsPerThread; ++m)
            vv[m] = vs[j][tx + 16 * m];
        addOuterProduct(acc, av, vv);
    }
    for (int d0 = 0; d0 < D; d0 += kDStep)
    {
        // every reader of the previous qs/ss finished before this barrier
        __syncthreads();
        for (int t = threadIdx.x; t < kChunk * kDStep; t += kThreads)
        {
            const int j = t / kDStep;
            const int x = t % kDStep;
            qs[j][x] = (j < rows && d0 + x < D) ? phi(toFloat(qb[int64_t(j) * D + d0 + x]), fm) : 0.f;
        }
        for (int t = threadIdx.x; t < kDStep * kTile; t += kThreads)
        {
            const int x = t / kTile;
            const int e = t % kTile;
            ss[x][e] = (d0 + x < D && e0 + e < E) ? sPrev[int64_t(d0 + x) * E + e0 + e] : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int x = 0; x < kDStep; ++x)
        {
            float qv[kRowsPerThread];
            float sv[kColsPerThread];
#pragma unroll
            for (int i = 0; i < kRowsPerThread; ++i)
                qv[i] = qs[ty * kRowsPerThread + i][x];
#pragma unroll
            for (int m = 0; m < kColsPerThread; ++m)
                sv[m] = ss[x][tx + 16 * m];
            addOuterProduct(acc, qv, sv);
        }
    }
    // den was written before the first barrier of the loop above (D >= 1, so there is one)
    T* yb = y + (bh * N + r0) * E;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i)
    {
        const int row = ty * kRowsPerThread + i;
        if (row >= rows)
            continue;
        const float scale = normalize ? 1.f / (den[row] + eps) : 1.f;
#pragma unroll
        for (int m = 0; m < kColsPerThread; ++m)
        {
            const int e = e0 + tx + 16 * m;
            if (e < E)
                yb[int64_t(row) * E + e] = fromFloat<T>(acc[i][m] * scale);
        }
    }
}


// ---- causal on tensor cores (float16, bfloat16). One block of four warps per (b·h, tile of 64 columns
// of E) walks the chunks of 64 rows in order, with the float32 state of the rows before the chunk in
// shared memory as one matrix [S | z] of D rows and kSCols columns: S's 64 columns, z, and zeros (one
// more n8 tile, which also makes the row stride bank-conflict free). The chunk's Q, K and V tiles
// come in by cp.async, two stages deep. Per chunk, warp w takes rows 16w..16w+15:
//   A = tril(φ(Q) φ(K)ᵀ)                (mma.sync in the I/O type, float32 accumulators)
//   [Y | d] = A·[V | 1] + φ(Q)·[S | z]  (A rounded to the I/O type; φ(Q)·[S | z] in tf32, so the state,
//                                        a sum over every row so far, keeps float32's range)
//   y = Y / (d + eps), or Y unnormalised
// then, after a barrier, [S | z] += φ(K)ᵀ·[V | 1] (warp w takes rows 16w, 16w + 64, ... of D), with
// φ(K) split into its rounding to the I/O type and the rounding of what that leaves (two products),
// so the state gains float32 sums of float32 features, as the state outputs promise. The column of
// ones turns the same products into the denominator and z's update.
constexpr int kMmaThreads = 128;
constexpr int kMmaMaxDim = 64;        // D; E is tiled
constexpr int kSCols = kTile + 8;     // [S | z | 0]: columns of the state in shared memory

bool causalMmaTakes(int64_t D, int64_t E)
{
    return D % 16 == 0 && E % 16 == 0 && D >= 16 && E >= 16 && D <= kMmaMaxDim;
}

// Two stages of Q, K [kChunk][D + 8] and V [kChunk][kTile + 8] of the I/O type, then [S | z] in float32.
template <typename T>
size_t causalMmaSharedBytes(int D)
{
    return 2 * size_t(kChunk) * size_t(2 * (D + 8) + kTile + 8) * sizeof(T) + size_t(D) * kSCols * sizeof(float);
}

// φ of both halves of a register of two T.
template <typename T>
__device__ __forceinline__ uint32_t phi2(uint32_t reg, int fm)
{
    return attnx::tc::pack2<T>(phi(attnx::tc::unpack2<T>(reg, 0), fm), phi(attnx::tc::unpack2<T>(reg, 1), fm));
}

// φ of both halves of a register of two T as hi + lo, each two T: hi the rounding of φ, lo the
// rounding of φ − hi. An element whose keep flag is false becomes 0 in both.
template <typename T>
__device__ __forceinline__ void phi2Split(uint32_t reg, int fm, bool keepLo, bool keepHi, uint32_t& hi, uint32_t& lo)
{
    namespace tc = attnx::tc;
    const float x0 = keepLo ? phi(tc::unpack2<T>(reg, 0), fm) : 0.f;
    const float x1 = keepHi ? phi(tc::unpack2<T>(reg, 1), fm) : 0.f;
    hi = tc::pack2<T>(x0, x1);
    lo = tc::pack2<T>(x0 - tc::unpack2<T>(hi, 0), x1 - tc::unpack2<T>(hi, 1));
}

template <typename T>
__global__ void __launch_bounds__(kMmaThreads) causalMmaKernel(const T* __restrict__ q, const T* __restrict__ k,
    const T* __restrict__ v, const float* __restrict__ s0, const float* __restrict__ z0, T* __restrict__ y,
    float* __restrict__ sOut, float* __restrict__ zOut, int64_t N, int D, int E, int fm, int normalize, float eps)
{
    namespace tc = attnx::tc;
    extern __shared__ float4 mmaShared[]; // 16-byte aligned, as ldmatrix and cp.async need
    const int eTiles = (E + kTile - 1) / kTile;
    const int64_t bh = blockIdx.x / eTiles;
    const int e0 = int(blockIdx.x % eTiles) * kTile;
    const int et = E - e0 < kTile ? E - e0 : kTile; // this block's columns, a multiple of 16
    const int ldD = D + 8;
    const int ldV = kTile + 8;
    const int stageElems = kChunk * (2 * ldD + ldV);
    T* stages = reinterpret_cast<T*>(mmaShared);
    float* ss = reinterpret_cast<float*>(stages + 2 * stageElems);
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int g = lane / 4;
    const int t = lane % 4;
    const int lrow = lane % 8 + 8 * ((lane / 8) % 2); // ldmatrix rows for A from [m][k]
    const int lcol = 8 * (lane / 16);
    const int krow = lane % 8 + 8 * (lane / 16);      // ldmatrix rows for A from [k][m] with .trans
    const int kcol = 8 * ((lane / 8) % 2);
    // B for the column of ones: k rows 2t.., n column g; 1 in column 0 only
    const uint32_t one2 = g == 0 ? tc::pack2<T>(1.f, 1.f) : 0u;
    const uint32_t ones[2] = {one2, one2};

    for (int i = threadIdx.x; i < D * kSCols; i += kMmaThreads)
    {
        const int d = i / kSCols;
        const int c = i - d * kSCols;
        float x = 0.f;
        if (c < et && s0)
            x = s0[(bh * D + d) * E + e0 + c];
        else if (c == kTile && z0)
            x = z0[bh * D + d];
        ss[i] = x;
    }

    const int64_t chunks = (N + kChunk - 1) / kChunk;
    auto loadChunk = [&](int64_t c) {
        T* st = stages + (c % 2) * stageElems;
        const int64_t r0 = c * kChunk;
        const int n = int(N - r0 < kChunk ? N - r0 : kChunk);
        tc::loadTileAsync<kMmaThreads>(st, ldD, q + (bh * N + r0) * D, D, kChunk, n, D);
        tc::loadTileAsync<kMmaThreads>(st + kChunk * ldD, ldD, k + (bh * N + r0) * D, D, kChunk, n, D);
        tc::loadTileAsync<kMmaThreads>(st + 2 * kChunk * ldD, ldV, v + (bh * N + r0) * E + e0, E, kChunk, n, et);
    };
    loadChunk(0);
    tc::cpAsyncCommit();
    for (int64_t c = 0; c < chunks; ++c)
    {
        if (c + 1 < chunks)
        {
            loadChunk(c + 1);
            tc::cpAsyncCommit();
            tc::cpAsyncWait<1>();
        }
        else
            tc::cpAsyncWait<0>();
        __syncthreads(); // this chunk's tiles have landed; at c = 0 the initial state is written
        const T* qs = stages + (c % 2) * stageElems;
        const T* ks = qs + kChunk * ldD;
        const T* vs = ks + kChunk * ldD;
        const int rows = int(N - c * kChunk < kChunk ? N - c * kChunk : kChunk);

        // A = tril(φ(Q) φ(K)ᵀ) for this warp's 16 rows (keys past the chunk's end meet only rows past it)
        uint32_t qf[kMmaMaxDim / 16][4];
        float a[kChunk / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < kMmaMaxDim / 16; ++kk)
        {
            if (kk * 16 >= D)
                break;
            tc::ldmatrixX4(qf[kk], qs + (warp * 16 + lrow) * ldD + kk * 16 + lcol);
#pragma unroll
            for (int i = 0; i < 4; ++i)
                qf[kk][i] = phi2<T>(qf[kk][i], fm);
            tc::mmaColMajorB<T>(a, qf[kk], ks + kk * 16, ldD, [fm](uint32_t b) { return phi2<T>(b, fm); });
        }
#pragma unroll
        for (int j = 0; j < kChunk / 8; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r)
                if (8 * j + 2 * t + r % 2 > warp * 16 + g + 8 * (r / 2))
                    a[j][r] = 0.f;

        // [Y | d] = A·[V | 1] + φ(Q)·[S | z]; o[8] holds d in its column 0
        float o[kSCols / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < kChunk / 16; ++kk)
        {
            uint32_t pa[4];
            tc::scoresAsA<T>(pa, a, kk);
            tc::mmaRowMajorB<T>(o, pa, vs + kk * 16 * ldV, ldV, et); // tiles 0..7: Y; tile 8 below
            tc::mma16816<T>(o[kTile / 8], pa, ones);
        }
        const T* qr0 = qs + (warp * 16 + g) * ldD;
        const T* qr1 = qr0 + 8 * ldD;
#pragma unroll
        for (int k8 = 0; k8 < kMmaMaxDim / 8; ++k8)
        {
            if (k8 * 8 >= D)
                break;
            const int d = 8 * k8 + t;
            const uint32_t qa[4] = {tc::toTf32(phi(toFloat(qr0[d]), fm)), tc::toTf32(phi(toFloat(qr1[d]), fm)),
                tc::toTf32(phi(toFloat(qr0[d + 4]), fm)), tc::toTf32(phi(toFloat(qr1[d + 4]), fm))};
            const float* sr0 = ss + d * kSCols + g;
            const float* sr1 = sr0 + 4 * kSCols;
#pragma unroll
            for (int j = 0; j < kSCols / 8; ++j)
            {
                if (j < kTile / 8 && 8 * j >= et)
                    continue;
                const uint32_t sb[2] = {tc::toTf32(sr0[8 * j]), tc::toTf32(sr1[8 * j])};
                tc::mma1688Tf32(o[j], qa, sb);
            }
        }
        // every lane of a quad holds rows g and g + 8; the denominator sits in the lane with t = 0
        float d0 = t == 0 ? o[kTile / 8][0] : 0.f;
        float d1 = t == 0 ? o[kTile / 8][2] : 0.f;
        d0 += __shfl_xor_sync(0xffffffffu, d0, 1);
        d1 += __shfl_xor_sync(0xffffffffu, d1, 1);
        d0 += __shfl_xor_sync(0xffffffffu, d0, 2);
        d1 += __shfl_xor_sync(0xffffffffu, d1, 2);
        const float inv0 = normalize ? 1.f / (d0 + eps) : 1.f;
        const float inv1 = normalize ? 1.f / (d1 + eps) : 1.f;
        const int row0 = warp * 16 + g;
        T* yb = y + (bh * N + c * kChunk) * E + e0;
#pragma unroll
        for (int j = 0; j < kTile / 8; ++j)
        {
            const int e = 8 * j + 2 * t;
            if (e >= et)
                break;
            if (row0 < rows)
            {
                yb[int64_t(row0) * E + e] = fromFloat<T>(o[j][0] * inv0);
                yb[int64_t(row0) * E + e + 1] = fromFloat<T>(o[j][1] * inv0);
            }
            if (row0 + 8 < rows)
            {
                yb[int64_t(row0 + 8) * E + e] = fromFloat<T>(o[j][2] * inv1);
                yb[int64_t(row0 + 8) * E + e + 1] = fromFloat<T>(o[j][3] * inv1);
            }
        }
        __syncthreads(); // every warp has read the state before this chunk

        // [S | z] += φ(K)ᵀ·[V | 1]; keys past the chunk's end are zero (φ(0) is 1 for elu)
        for (int mt = warp; mt * 16 < D; mt += kMmaThreads / 32)
        {
            float acc[kSCols / 8][4];
            float* sr0 = ss + (mt * 16 + g) * kSCols + 2 * t;
            float* sr1 = sr0 + 8 * kSCols;
#pragma unroll
            for (int j = 0; j < kSCols / 8; ++j)
            {
                acc[j][0] = sr0[8 * j];
                acc[j][1] = sr0[8 * j + 1];
                acc[j][2] = sr1[8 * j];
                acc[j][3] = sr1[8 * j + 1];
            }
#pragma unroll
            for (int kk = 0; kk < kChunk / 16; ++kk)
            {
                uint32_t ka[4];
                tc::ldmatrixX4Trans(ka, ks + (kk * 16 + krow) * ldD + mt * 16 + kcol);
                const int key = kk * 16 + 2 * t; // ka[0], ka[1]: keys key, key + 1; ka[2], ka[3]: key + 8, key + 9
                uint32_t hi[4];
                uint32_t lo[4];
                phi2Split<T>(ka[0], fm, key < rows, key + 1 < rows, hi[0], lo[0]);
                phi2Split<T>(ka[1], fm, key < rows, key + 1 < rows, hi[1], lo[1]);
                phi2Split<T>(ka[2], fm, key + 8 < rows, key + 9 < rows, hi[2], lo[2]);
                phi2Split<T>(ka[3], fm, key + 8 < rows, key + 9 < rows, hi[3], lo[3]);
                tc::mmaRowMajorB<T>(acc, hi, vs + kk * 16 * ldV, ldV, et);
                tc::mmaRowMajorB<T>(acc, lo, vs + kk * 16 * ldV, ldV, et);
                tc::mma16816<T>(acc[kTile / 8], hi, ones);
                tc::mma16816<T>(acc[kTile / 8], lo, ones);
            }
#pragma unroll
            for (int j = 0; j < kSCols / 8; ++j)
            {
                if (j < kTile / 8 && 8 * j >= et)
                    continue;
                sr0[8 * j] = acc[j][0];
                sr0[8 * j + 1] = acc[j][1];
                sr1[8 * j] = acc[j][2];
                sr1[8 * j + 1] = acc[j][3];
            }
        }
        __syncthreads(); // the state is complete before the next chunk reads it, and this stage is free
    }
    if (sOut)
        for (int i = threadIdx.x; i < D * et; i += kMmaThreads)
        {
            const int d = i / et;
            const int e = i - d * et;
            sOut[(bh * D + d) * E + e0 + e] = ss[d * kSCols + e];
        }
    if (zOut && e0 == 0)
        for (int d = threadIdx.x; d < D; d += kMmaThreads)
            zOut[bh * D + d] = ss[d * kSCols + kTile];
}

template <typename T>
int launch(const void* q, const void* k, const void* v, const float* s0, const float* z0, void* y, float* sOut,
    float* zOut, void* workspace, int64_t BH, int64_t N, int64_t M, int D, int E, int causal, int fm,
    int normalize, float eps, cudaStream_t stream)
{
    const T* qt = static_cast<const T*>(q);
    const T* kt = static_cast<const T*>(k);
    const T* vt = static_cast<const T*>(v);
    T* yt = static_cast<T*>(y);
    if constexpr (!std::is_same<T, float>::value)
    {
        if (causal && causalMmaTakes(D, E))
        {
            const int64_t blocks = BH * ((E + kTile - 1) / kTile); // the entry point checked B·H·chunks only
            if (blocks > 0x7fffffffLL)
                return ATTNX_ERR_SHAPE;
            return attnx::launchWithShared(causalMmaKernel<T>, unsigned(blocks), kMmaThreads,
                causalMmaSharedBytes<T>(D), stream, qt, kt, vt, s0, z0, yt, sOut, zOut, N, D, E, fm, normalize, eps);
        }
    }
    if (causal)
    {
        if (!workspace)
            return ATTNX_ERR_WORKSPACE;
        float* ws = static_cast<float*>(workspace);
        const int64_t nChunks = (N + kChunk - 1) / kChunk;
        const unsigned tiles = unsigned((D + kTile - 1) / kTile) * unsigned((E + kTile - 1) / kTile);
        chunkStateKernel<T><<<dim3(unsigned(BH * nChunks), tiles, 1), kThreads, 0, stream>>>(
            kt, vt, ws, N, nChunks, D, E, fm);
        const unsigned prefixTiles = unsigned((stateFloats(D, E) + kThreads - 1) / kThreads);
        prefixKernel<<<dim3(unsigned(BH), prefixTiles, 1), kThreads, 0, stream>>>(
            ws, s0, z0, sOut, zOut, nChunks, D, E);
        chunkOutputKernel<T><<<dim3(unsigned(BH * nChunks), unsigned((E + kTile - 1) / kTile), 1), kThreads, 0,
            stream>>>(qt, kt, vt, ws, yt, N, nChunks, D, E, fm, normalize, eps);
    }
    else
    {
        float* s = sOut;
        float* z = zOut;
        if (!s)
        {
            if (!workspace)
                return ATTNX_ERR_WORKSPACE;
            s = static_cast<float*>(workspace);
            z = s + BH * D * E;
        }
        const unsigned sTiles = unsigned((int64_t(D) * E + kThreads - 1) / kThreads);
        stateKernel<T><<<dim3(unsigned(BH), sTiles, 1), kThreads, 0, stream>>>(kt, vt, s0, z0, s, z, M, D, E, fm);
        const unsigned eTiles = unsigned((E + kETile - 1) / kETile);
        const unsigned rowChunks = unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock);
        rowKernel<T><<<dim3(unsigned(BH), eTiles, rowChunks), kThreads, 0, stream>>>(
            qt, s, z, yt, N, D, E, fm, normalize, eps);
    }
    return cudaGetLastError() == cudaSuccess ? ATTNX_OK : ATTNX_ERR_CUDA;
}

} // namespace

extern "C" size_t attnx_linear_attention_workspace_size(
    int64_t B, int64_t H, int64_t N, int64_t D, int64_t E, int32_t causal, int32_t dtype)
{
    if (B < 1 || H < 1 || N < 1 || D < 1 || E < 1)
        return 0;
    const int64_t perState = D * E + D;
    if (causal && dtype != ATTNX_DTYPE_FLOAT32 && causalMmaTakes(D, E))
        return 0;
    if (causal)
        return size_t(B * H * ((N + kChunk - 1) / kChunk) * perState) * sizeof(float);
    return size_t(B * H * perState) * sizeof(float);
}

extern "C" int attnx_linear_attention_forward(const void* q, const void* k, const void* v, const float* state_s,
    const float* state_z, void* y, float* state_s_out, float* state_z_out, void* workspace, int64_t B, int64_t H,
    int64_t N, int64_t M, int64_t D, int64_t E, int32_t causal, int32_t feature_map, int32_t normalize, float eps,
    int32_t chunk_size, int32_t dtype, void* stream)
{
    if (B < 1 || H < 1 || N < 1 || M < 1 || D < 1 || E < 1 || (causal && M != N))
        return ATTNX_ERR_SHAPE;
    if (D > kMaxDim || E > kMaxDim)
        return ATTNX_ERR_HEAD_DIM;
    // grid.x carries B·H (causal: B·H·chunks), grid.z the non-causal row blocks (limit 65535)
    if (B * H * ((N + kChunk - 1) / kChunk) > 0x7fffffffLL || (N + kRowsPerBlock - 1) / kRowsPerBlock > 65535)
        return ATTNX_ERR_SHAPE;
    if (!LinearAttentionParams{causal, feature_map, normalize, eps, chunk_size}.valid())
        return ATTNX_ERR_ATTRIBUTE;
    if ((state_s == nullptr) != (state_z == nullptr) || (state_s_out == nullptr) != (state_z_out == nullptr))
        return ATTNX_ERR_STATE;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const int d = int(D);
    const int e = int(E);
    switch (dtype)
    {
    case ATTNX_DTYPE_FLOAT32:
        return launch<float>(q, k, v, state_s, state_z, y, state_s_out, state_z_out, workspace, B * H, N, M, d, e,
            causal, feature_map, normalize, eps, s);
    case ATTNX_DTYPE_FLOAT16:
        return launch<__half>(q, k, v, state_s, state_z, y, state_s_out, state_z_out, workspace, B * H, N, M, d, e,
            causal, feature_map, normalize, eps, s);
    case ATTNX_DTYPE_BFLOAT16:
        return launch<__nv_bfloat16>(q, k, v, state_s, state_z, y, state_s_out, state_z_out, workspace, B * H, N, M,
            d, e, causal, feature_map, normalize, eps, s);
    default: return ATTNX_ERR_DTYPE;
    }
}
