// LinearAttention kernels (float32 accumulation; float32/float16/bfloat16 I/O).
//
// Non-causal: stateKernel forms S = S0 + Σ_j φ(k_j) v_jᵀ and z = z0 + Σ_j φ(k_j) per (b, h), then
// rowKernel computes y_i = φ(q_i)ᵀS / (φ(q_i)ᵀz + eps) with the normaliser fused in the same pass.
// Causal: rowKernel<causal> scans the keys in order with S and z held in float32 registers,
// updating them with row i before producing y_i. The scan is sequential in N per (b, h, e-tile):
// correct for any N >= 1 but not the chunked parallel form (chunk_size only tiles the ONNX body).
#include "linearAttentionKernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace
{

constexpr int kMaxDim = ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM;
constexpr int kETile = 32;                  // output columns per block: one warp lane each
constexpr int kDGroups = 8;                 // warps per block; warp g owns d = g, g+8, g+16, ...
constexpr int kThreads = kETile * kDGroups; // 256
constexpr int kDPerThread = kMaxDim / kDGroups; // 32 registers of S per thread
constexpr int kRowsPerBlock = 64;           // non-causal rows per block
constexpr int kStateRows = 16;              // keys staged in shared memory per step of stateKernel

__device__ __forceinline__ float toFloat(float x) { return x; }
__device__ __forceinline__ float toFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float toFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T fromFloat(float x);
template <> __device__ __forceinline__ float fromFloat<float>(float x) { return x; }
template <> __device__ __forceinline__ __half fromFloat<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float phi(float x, int fm)
{
    if (fm == ATTNX_FEATURE_ELU)
        return x > 0.f ? x + 1.f : __expf(x); // elu(x) + 1 = exp(x) for x <= 0
    if (fm == ATTNX_FEATURE_RELU)
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

// grid (b·h, e-tile, row-chunk). Thread (g = warp, lane) holds S[d][e0 + lane] for d ≡ g (mod 8).
// Non-causal: S, z read from sz/zz (already including the input state); rows [chunk·64, +64).
// Causal: S, z start at the input state (or 0) and are updated with row i before y_i; all rows.
template <typename T, bool kCausal>
__global__ void __launch_bounds__(kThreads) rowKernel(const T* __restrict__ q, const T* __restrict__ k,
    const T* __restrict__ v, const float* __restrict__ sIn, const float* __restrict__ zIn, T* __restrict__ y,
    float* __restrict__ sOut, float* __restrict__ zOut, int64_t N, int D, int E, int fm, int normalize, float eps)
{
    __shared__ float fq[kMaxDim];
    __shared__ float fk[kMaxDim];
    __shared__ float vs[kETile];
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
        const bool ok = d < D && eOk;
        s[t] = (ok && sIn) ? sIn[(bh * D + d) * E + e] : 0.f;
        z[t] = (d < D && zIn) ? zIn[bh * D + d] : 0.f;
    }

    const int64_t rowBegin = kCausal ? 0 : int64_t(blockIdx.z) * kRowsPerBlock;
    const int64_t rowEnd = kCausal ? N : (rowBegin + kRowsPerBlock < N ? rowBegin + kRowsPerBlock : N);
    const T* qb = q + bh * N * D;
    const T* kb = k + bh * N * D; // causal: M == N
    const T* vb = v + bh * N * E;
    T* yb = y + bh * N * E;
    for (int64_t i = rowBegin; i < rowEnd; ++i)
    {
        // the previous row's readers of fq/fk/vs finished before its second barrier
        for (int d = threadIdx.x; d < D; d += kThreads)
        {
            fq[d] = phi(toFloat(qb[i * D + d]), fm);
            if (kCausal)
                fk[d] = phi(toFloat(kb[i * D + d]), fm);
        }
        if (kCausal && threadIdx.x < kETile)
            vs[threadIdx.x] = eOk ? toFloat(vb[i * E + e]) : 0.f;
        __syncthreads();
        float pn = 0.f;
        float pd = 0.f;
#pragma unroll
        for (int t = 0; t < kDPerThread; ++t)
        {
            const int d = g + t * kDGroups;
            if (d < D)
            {
                if (kCausal)
                {
                    s[t] = fmaf(fk[d], vs[lane], s[t]);
                    z[t] += fk[d];
                }
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
    if (kCausal && sOut)
    {
#pragma unroll
        for (int t = 0; t < kDPerThread; ++t)
        {
            const int d = g + t * kDGroups;
            if (d < D && eOk)
                sOut[(bh * D + d) * E + e] = s[t];
            if (d < D && blockIdx.y == 0 && lane == 0)
                zOut[bh * D + d] = z[t];
        }
    }
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
    const unsigned eTiles = unsigned((E + kETile - 1) / kETile);
    if (causal)
    {
        rowKernel<T, true><<<dim3(unsigned(BH), eTiles, 1), kThreads, 0, stream>>>(
            qt, kt, vt, s0, z0, yt, sOut, zOut, N, D, E, fm, normalize, eps);
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
        const unsigned rowChunks = unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock);
        rowKernel<T, false><<<dim3(unsigned(BH), eTiles, rowChunks), kThreads, 0, stream>>>(
            qt, nullptr, nullptr, s, z, yt, nullptr, nullptr, N, D, E, fm, normalize, eps);
    }
    return cudaGetLastError() == cudaSuccess ? ATTNX_OK : ATTNX_ERR_CUDA;
}

} // namespace

extern "C" size_t attnx_linear_attention_workspace_size(int64_t B, int64_t H, int64_t D, int64_t E, int32_t causal)
{
    if (causal)
        return 0;
    return size_t(B * H * (D * E + D)) * sizeof(float);
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
    // grid.x carries B·H, grid.y/z stay far below their 65535 limit for these sizes
    if (B * H > 0x7fffffffLL || (N + kRowsPerBlock - 1) / kRowsPerBlock > 65535)
        return ATTNX_ERR_SHAPE;
    if (feature_map < ATTNX_FEATURE_ELU || feature_map > ATTNX_FEATURE_IDENTITY || !(eps > 0.f && eps <= 1.f)
        || chunk_size < 1 || chunk_size > 4096 || (causal != 0 && causal != 1) || (normalize != 0 && normalize != 1))
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

extern "C" const char* attnx_status_string(int status)
{
    switch (status)
    {
    case ATTNX_OK: return "ok";
    case ATTNX_ERR_SHAPE: return "bad shape: every size must be >= 1, M must equal N when causal";
    case ATTNX_ERR_HEAD_DIM: return "head dim D or E above 256";
    case ATTNX_ERR_DTYPE: return "dtype must be float32, float16 or bfloat16";
    case ATTNX_ERR_ATTRIBUTE: return "attribute outside what the LinearAttention spec allows";
    case ATTNX_ERR_STATE: return "state_s and state_z (and their outputs) must be given together";
    case ATTNX_ERR_WORKSPACE: return "workspace required for the non-causal form without state outputs";
    case ATTNX_ERR_CUDA: return "CUDA kernel launch failed";
    default: return "unknown status";
    }
}
