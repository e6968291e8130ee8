// Warp-level tensor-core instructions (sm_80 and later) and asynchronous copies, for the kernels' float16
// and bfloat16 paths: mma.sync, ldmatrix and cp.async as inline PTX, or, in an emulated build
// (trt_plugins/emulation), the emulator's versions of the same instructions. Free of TensorRT.
//
// Fragments, per lane of a warp, with g = lane / 4 and t = lane % 4 (the PTX ISA's groupID and
// threadID_in_group):
//   A, 16×16 of 16-bit, row-major: uint32_t[4], each two adjacent columns (low half first):
//     [0] row g, cols 2t..2t+1   [1] row g+8, cols 2t..   [2] row g, cols 2t+8..   [3] row g+8, cols 2t+8..
//   B, 16×8 (k × n): uint32_t[2]: [0] rows 2t..2t+1 of col g   [1] rows 2t+8..2t+9 of col g
//   C, 16×8 float32: float[4]: [0], [1] row g, cols 2t, 2t+1   [2], [3] row g+8, cols 2t, 2t+1
//   tf32 A, 16×8: uint32_t[4]: [0] (g, t) [1] (g+8, t) [2] (g, t+4) [3] (g+8, t+4); B 8×8: [0] (t, g) [1] (t+4, g)
// The C fragments of two n8 tiles side by side are, element for element, the A fragment of their 16
// columns (the scores of one product feed the next as flash attention does).
#pragma once

#include "kernelCommon.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace attnx
{
namespace tc
{

// Two values of T (__half or __nv_bfloat16) in one register, `lo` in the low half.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi)
{
    const T l = fromFloat<T>(lo);
    const T h = fromFloat<T>(hi);
    uint16_t bl, bh;
    static_assert(sizeof(T) == 2, "a 16-bit type");
    memcpy(&bl, static_cast<const void*>(&l), 2);
    memcpy(&bh, static_cast<const void*>(&h), 2);
    return uint32_t(bl) | (uint32_t(bh) << 16);
}

// Element i (0 low, 1 high) of a register of two T, as float.
template <typename T>
__device__ __forceinline__ float unpack2(uint32_t reg, int i)
{
    const uint16_t bits = uint16_t(reg >> (16 * i));
    T x;
    memcpy(static_cast<void*>(&x), &bits, 2);
    return toFloat(x);
}

#if defined(ATTNX_EMULATION)

// ldmatrix.sync.aligned.m8n8.x4.shared.b16 (lanes 8m..8m+7 point at the rows of matrix m)
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], const void* row, const char* file = __builtin_FILE(),
    int line = __builtin_LINE())
{
    ::attnx_emu::ldmatrix(file, line, r, 4, false, row);
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16
__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], const void* row,
    const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
    ::attnx_emu::ldmatrix(file, line, r, 4, true, row);
}

// d += a·b, m16n8k16, T = __half or __nv_bfloat16, float32 accumulation
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
    const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
    ::attnx_emu::mma16816(file, line, d, a, b, std::is_same<T, __nv_bfloat16>::value);
}

// d += a·b, m16n8k8 with tf32 inputs (toTf32), float32 accumulation
__device__ __forceinline__ void mma1688Tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
    const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
    ::attnx_emu::mma1688Tf32(file, line, d, a, b);
}

// cvt.rna.tf32.f32: round to 10 bits of mantissa, ties away from zero
__device__ __forceinline__ uint32_t toTf32(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, 4);
    if ((bits & 0x7f800000u) != 0x7f800000u) // finite: round; inf and NaN pass
        bits += 0x1000u;
    return bits & 0xffffe000u;
}

// 16 bytes from global `src` to shared `dst`, asynchronously; with valid false, 16 zero bytes (src unread)
__device__ __forceinline__ void cpAsync16(void* dst, const void* src, bool valid)
{
    ::attnx_emu::cpAsync16(dst, src, valid ? 16 : 0);
}

__device__ __forceinline__ void cpAsyncCommit()
{
    ::attnx_emu::cpAsyncCommit();
}

// wait until at most `kPending` of this thread's committed groups are still in flight
template <int kPending>
__device__ __forceinline__ void cpAsyncWait()
{
    ::attnx_emu::cpAsyncWait(kPending);
}

#else

__device__ __forceinline__ uint32_t sharedAddress(const void* p)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sharedAddress(row)));
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sharedAddress(row)));
}

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
{
    if constexpr (std::is_same<T, __nv_bfloat16>::value)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma1688Tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t toTf32(float x)
{
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ void cpAsync16(void* dst, const void* src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sharedAddress(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void cpAsyncCommit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int kPending>
__device__ __forceinline__ void cpAsyncWait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

#endif

// The A fragment of 16 rows × 16 columns, in T, that the C fragments of n8 tiles 2kk and 2kk + 1 make
// side by side (the C layout of two tiles is the A layout of their columns).
template <typename T, int kTiles>
__device__ __forceinline__ void scoresAsA(uint32_t (&a)[4], const float (&c)[kTiles][4], int kk)
{
    a[0] = pack2<T>(c[2 * kk][0], c[2 * kk][1]);
    a[1] = pack2<T>(c[2 * kk][2], c[2 * kk][3]);
    a[2] = pack2<T>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[3] = pack2<T>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// acc[j] += a · B_j over the n8 tiles j of B = rows [0, 16) × columns [0, cols) of a row-major [k][n]
// tile of T in shared memory starting at `rows` (rows ld elements apart; cols a multiple of 16, at
// most 8·kTiles, rounded down to pairs): ldmatrix .trans turns its rows into B fragments.
template <typename T, int kTiles>
__device__ __forceinline__ void mmaRowMajorB(float (&acc)[kTiles][4], const uint32_t (&a)[4], const T* rows, int ld,
    int cols)
{
    const int lane = threadIdx.x % 32;
    const T* p = rows + (lane % 8 + 8 * ((lane / 8) % 2)) * ld + 8 * (lane / 16);
#pragma unroll
    for (int np = 0; np < kTiles / 2; ++np)
    {
        if (np * 16 >= cols)
            break;
        uint32_t b[4];
        ldmatrixX4Trans(b, p + np * 16);
        const uint32_t b0[2] = {b[0], b[1]};
        const uint32_t b1[2] = {b[2], b[3]};
        mma16816<T>(acc[2 * np], a, b0);
        mma16816<T>(acc[2 * np + 1], a, b1);
    }
}

// acc[j] += a · B_j over the n8 tiles j of B = the transpose of rows [0, 8·kTiles) × columns [0, 16)
// of a row-major [n][k] tile of T in shared memory starting at `rows` (a K tile whose rows are keys):
// ldmatrix without .trans; each B register passes through f (a per-element map such as a feature map).
template <typename T, int kTiles, typename F>
__device__ __forceinline__ void mmaColMajorB(float (&acc)[kTiles][4], const uint32_t (&a)[4], const T* rows, int ld,
    F f)
{
    const int lane = threadIdx.x % 32;
    const T* p = rows + (lane % 8 + 8 * (lane / 16)) * ld + 8 * ((lane / 8) % 2);
#pragma unroll
    for (int np = 0; np < kTiles / 2; ++np)
    {
        uint32_t b[4];
        ldmatrixX4(b, p + np * 16 * ld);
        const uint32_t b0[2] = {f(b[0]), f(b[1])};
        const uint32_t b1[2] = {f(b[2]), f(b[3])};
        mma16816<T>(acc[2 * np], a, b0);
        mma16816<T>(acc[2 * np + 1], a, b1);
    }
}

// Starts copying rows [0, n) of a [count × cols] tile of T (cols a multiple of 8) from src (rows
// srcStride elements apart) into shared dst (rows ld apart, 16-byte aligned) with cp.async; rows
// n..count−1 become zeros. All kThreads threads of the block call it; each then commits and waits.
template <int kThreads, typename T>
__device__ __forceinline__ void loadTileAsync(T* dst, int ld, const T* src, int64_t srcStride, int count, int n,
    int cols)
{
    const int pieces = cols * int(sizeof(T)) / 16;
    const int per = 16 / int(sizeof(T));
    for (int c = threadIdx.x; c < count * pieces; c += kThreads)
    {
        const int r = c / pieces;
        const int x = (c - r * pieces) * per;
        const bool valid = r < n;
        cpAsync16(dst + r * ld + x, valid ? src + r * srcStride + x : src, valid);
    }
}

} // namespace tc
} // namespace attnx
