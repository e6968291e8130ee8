// The CUDA device language the attnx kernels use, on the CPU: compiled with the host compiler, the
// unmodified kernel sources run on emulator.cpp's scheduler, one fiber per CUDA thread. Forced in
// front of every emulated source (-include); AttnxEmulation.cmake rewrites the two things no header
// can define, the <<<...>>> launch and `extern __shared__` arrays, into the calls below.
//
// What maps to what:
// - __shared__ arrays are thread_local: a worker (an OS thread) runs one block at a time, all of its
//   fibers on that worker, so they share the arrays exactly as a block shares shared memory.
// - threadIdx, blockIdx, blockDim and gridDim read the running fiber's indices.
// - __syncthreads and __shfl_xor_sync are barriers of the block and of the warp; a fiber runs until
//   it reaches one, then the next fiber runs (in ascending or descending thread order).
// The real CUDA headers still provide __half, __nv_bfloat16 and their host conversions, dim3 and
// the runtime's types; this file defines, before they are read, the qualifiers they would otherwise
// define for a host compiler.
#pragma once

// kernel headers with device-only code (inline PTX) take the emulator's versions instead
#define ATTNX_EMULATION 1
#define __shared__ thread_local
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <driver_types.h>
#include <vector_types.h>

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace attnx_emu
{

// The indices of the CUDA thread a fiber stands for.
struct ThreadIndices
{
    uint3 thread;
    uint3 block;
    dim3 blockSize;
    dim3 gridSize;
};

// The running fiber's indices, set by the scheduler before it switches to a fiber.
extern thread_local const ThreadIndices* current;

// Where a kernel is launched from (the rewritten <<<...>>>), and its configuration.
struct LaunchConfig
{
    const char* file;
    int line;
    dim3 grid;
    dim3 block;
    size_t sharedBytes;

    LaunchConfig(const char* file_, int line_, dim3 grid_, dim3 block_, size_t sharedBytes_ = 0,
        cudaStream_t = nullptr)
        : file(file_), line(line_), grid(grid_), block(block_), sharedBytes(sharedBytes_)
    {
    }
};

// Runs thread(closure) as every thread of every block of `cfg`, synchronously; `kernel` identifies
// the kernel for cudaFuncSetAttribute. A launch the device would refuse, or a fault the emulator
// sees while it runs, becomes the error cudaGetLastError returns.
void launch(const LaunchConfig& cfg, const void* kernel, void (*thread)(void*), void* closure);

cudaError_t takeLastError();
cudaError_t setFuncAttribute(const void* kernel, cudaFuncAttribute attr, int value);

void syncthreads(const char* file, int line);
uint64_t shuffleXor(const char* file, int line, unsigned mask, uint64_t bits, int laneMask, int width);

// The warp-collective tensor-core instructions of common/tensorCore.cuh, with the register layouts
// of the PTX ISA ("Matrix Fragments for mma.m16n8k16", "ldmatrix"): every lane of the warp must
// reach the same call site; `file` and `line` name it.
// ldmatrix.sync.aligned.m8n8.x{count}[.trans].shared.b16: this lane's row address, `count` registers out.
void ldmatrix(const char* file, int line, uint32_t* regs, int count, bool trans, const void* rowAddress);
// mma.sync.aligned.m16n8k16.row.col.f32.{f16|bf16}: d += a·b (a: 4 registers, b: 2, d: 4 floats).
void mma16816(const char* file, int line, float* d, const uint32_t* a, const uint32_t* b, bool bf16);
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d += a·b.
void mma1688Tf32(const char* file, int line, float* d, const uint32_t* a, const uint32_t* b);
// cp.async.cg.shared.global: copies srcBytes of 16 from src and zero-fills the rest, but only when
// this thread waits for the copy's group (cpAsyncWait), as the device promises no sooner.
void cpAsync16(void* dst, const void* src, int srcBytes);
void cpAsyncCommit();
void cpAsyncWait(int pendingGroups); // cp.async.wait_group: all but the newest pendingGroups groups

// The launch's dynamic shared memory (sharedBytes, 16-byte aligned), per block.
void* dynamicShared();

template <typename... P>
struct PendingLaunch
{
    void (*kernel)(P...);
    LaunchConfig cfg;
};

// kernel<<<cfg>>>(args) is rewritten to kernel ^ LaunchConfig(cfg) ^ arguments(args).
template <typename... P>
PendingLaunch<P...> operator^(void (*kernel)(P...), const LaunchConfig& cfg)
{
    return {kernel, cfg};
}

template <typename... A>
std::tuple<A...> arguments(A... args)
{
    return std::tuple<A...>(args...);
}

template <typename... P, typename... A>
void operator^(const PendingLaunch<P...>& pending, std::tuple<A...> args)
{
    static_assert(sizeof...(P) == sizeof...(A), "a kernel launch with the wrong number of arguments");
    // converted to the parameter types once, as CUDA does; every thread gets these values
    struct Closure
    {
        void (*kernel)(P...);
        std::tuple<std::decay_t<P>...> params;
    } closure{pending.kernel, std::tuple<std::decay_t<P>...>(std::move(args))};
    launch(pending.cfg, reinterpret_cast<const void*>(pending.kernel),
        [](void* p) {
            auto* c = static_cast<Closure*>(p);
            std::apply(c->kernel, c->params);
        },
        &closure);
}

template <typename T>
T shflXor(const char* file, int line, unsigned mask, T value, int laneMask, int width = 32)
{
    static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value, "a shuffle of a register");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    bits = shuffleXor(file, line, mask, bits, laneMask, width);
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

} // namespace attnx_emu

#define threadIdx (::attnx_emu::current->thread)
#define blockIdx (::attnx_emu::current->block)
#define blockDim (::attnx_emu::current->blockSize)
#define gridDim (::attnx_emu::current->gridSize)
#define __syncthreads() ::attnx_emu::syncthreads(__FILE__, __LINE__)
#define __shfl_xor_sync(...) ::attnx_emu::shflXor(__FILE__, __LINE__, __VA_ARGS__)

// the device's fast exp; the host's expf is at least as accurate
inline float __expf(float x)
{
    return expf(x);
}

inline cudaError_t cudaGetLastError()
{
    return ::attnx_emu::takeLastError();
}

template <typename T>
cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value)
{
    return ::attnx_emu::setFuncAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
