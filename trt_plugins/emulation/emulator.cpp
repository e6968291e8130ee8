// The CUDA emulator: runs kernels compiled for the host (attnx_emulation.h) on the CPU, one fiber per
// CUDA thread. Blocks are shared out to a pool of worker threads; a worker runs one block at a time
// and switches between the block's fibers at barriers: every runnable fiber runs, in thread order
// (ascending or descending), until it reaches __syncthreads, a warp instruction (a shuffle, ldmatrix,
// mma) or its end; then a warp whose 32 lanes all wait at the same warp instruction has it carried
// out for all lanes at once, from the operands they all hold at that moment, and goes on; a block
// whose threads all wait at the same __syncthreads goes on. Threads that can never go on (a barrier
// some threads skip, lanes at different warp instructions) fail the launch with a description rather
// than hang. The launch rules a device enforces (block and grid sizes, dynamic shared memory and its
// opt-in) are checked first. cp.async copies are made when their thread waits for them.
#include "attnxEmulatorApi.h"
#include "attnx_emulation.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) && !defined(ATTNX_EMU_UCONTEXT)
#define ATTNX_EMU_FAST_SWITCH 1
#else
#define ATTNX_EMU_FAST_SWITCH 0
#include <ucontext.h>
#endif

namespace attnx_emu
{

thread_local const ThreadIndices* current = nullptr;

namespace
{

constexpr unsigned kWarpSize = 32;
constexpr size_t kStackBytes = 64 * 1024;
constexpr size_t kDefaultSharedBytes = 48 * 1024; // above this a kernel must opt in
// the smallest opt-in limit of the architectures the library is built for (sm_86 and sm_89)
constexpr size_t kMaxSharedBytes = 99 * 1024;
constexpr size_t kCanaryBytes = 64;   // after the dynamic shared memory: a write there is an overrun
constexpr unsigned char kFill = 0xff; // NaN in float32, float16 and bfloat16

size_t pageSize()
{
    static const size_t page = size_t(sysconf(_SC_PAGESIZE));
    return page;
}

// ---------------------------------------------------------------- fiber contexts

#if ATTNX_EMU_FAST_SWITCH
// x86-64: a switch saves the callee-saved registers on the current stack, stores the stack pointer,
// loads the other one and pops its registers; the return lands where that fiber last switched away.
extern "C" void attnx_emu_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .globl attnx_emu_switch
    .hidden attnx_emu_switch
    .type attnx_emu_switch, @function
attnx_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size attnx_emu_switch, .-attnx_emu_switch
)");

struct Context
{
    void* sp = nullptr;
};

void switchContext(Context& from, Context& to)
{
    attnx_emu_switch(&from.sp, to.sp);
}

void prepareContext(Context& c, void* stackLow, size_t bytes, void (*entry)())
{
    const uintptr_t top = (reinterpret_cast<uintptr_t>(stackLow) + bytes) & ~uintptr_t(15);
    // six registers to pop, then `ret` into entry with the stack as a call leaves it (8 mod 16)
    void** frame = reinterpret_cast<void**>(top - 8 * sizeof(void*));
    for (int i = 0; i < 6; ++i)
        frame[i] = nullptr;
    frame[6] = reinterpret_cast<void*>(entry);
    frame[7] = nullptr; // entry's return address: it never returns
    c.sp = frame;
}
#else
struct Context
{
    ucontext_t uc;
};

void switchContext(Context& from, Context& to)
{
    swapcontext(&from.uc, &to.uc);
}

void prepareContext(Context& c, void* stackLow, size_t bytes, void (*entry)())
{
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stackLow;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

// A fiber's stack with an inaccessible page below it: an overflow faults instead of corrupting.
struct Stack
{
    unsigned char* base;

    Stack()
    {
        void* p = mmap(nullptr, kStackBytes + pageSize(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
        {
            std::fprintf(stderr, "attnx emulator: cannot map a fiber stack\n");
            std::abort();
        }
        base = static_cast<unsigned char*>(p);
        mprotect(base, pageSize(), PROT_NONE);
    }
    ~Stack() { munmap(base, kStackBytes + pageSize()); }
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;

    void* low() const { return base + pageSize(); }
    bool guardHolds(const void* addr) const
    {
        auto* a = static_cast<const unsigned char*>(addr);
        return a >= base && a < base + pageSize();
    }
};

// ---------------------------------------------------------------- fibers, workers, errors

enum class State
{
    Runnable,
    AtSyncthreads,
    AtWarp, // at a warp instruction: `request` says which
    Done
};

enum class WarpOp
{
    Shuffle,
    Ldmatrix,
    Mma16816,
    Mma1688Tf32
};

const char* warpOpName(WarpOp op)
{
    switch (op)
    {
    case WarpOp::Shuffle: return "__shfl_xor_sync";
    case WarpOp::Ldmatrix: return "ldmatrix";
    case WarpOp::Mma16816: return "mma.m16n8k16";
    case WarpOp::Mma1688Tf32: return "mma.m16n8k8.tf32";
    }
    return "?";
}

// A lane's part of a warp instruction: its operands, and where its result goes (on its own stack,
// which stays put while it waits).
struct WarpRequest
{
    WarpOp op = WarpOp::Shuffle;
    uint64_t bits = 0;              // shuffle: the lane's value
    int laneMask = 0;               // shuffle
    const void* address = nullptr;  // ldmatrix: the row this lane points at
    int count = 0;                  // ldmatrix: matrices (1, 2, 4)
    bool flag = false;              // ldmatrix: .trans; mma16816: bf16 (else f16)
    const uint32_t* a = nullptr;    // mma
    const uint32_t* b = nullptr;    // mma
    void* out = nullptr;            // uint64_t (shuffle), uint32_t[count] (ldmatrix), float[4] (mma, += )
};

// A cp.async this thread issued and has not waited for.
struct PendingCopy
{
    void* dst;
    const void* src;
    int srcBytes;
};

struct Fiber
{
    Context ctx;
    std::unique_ptr<Stack> stack;
    ThreadIndices idx;
    unsigned linear = 0;
    State state = State::Runnable;
    const char* file = "";
    int line = 0;
    WarpRequest request;
    std::vector<PendingCopy> copies;
    std::vector<size_t> groupEnds; // copies[0, groupEnds[g]) belong to committed groups 0..g
};

struct Launch
{
    const LaunchConfig* cfg;
    void (*thread)(void*);
    void* closure;
    bool descending;
};

struct Worker
{
    Context scheduler;
    std::vector<Fiber> fibers;
    std::vector<unsigned char> shared; // dynamic shared memory, then kCanaryBytes
    const Launch* launch = nullptr;
    Fiber* running = nullptr;
    std::string error;
};

thread_local Worker* tlsWorker = nullptr;

std::mutex errorMutex;
cudaError_t lastError = cudaSuccess; // what cudaGetLastError returns next
std::string firstMessage;            // attnx_emu_error: the first failure since the last clear
std::atomic<bool> descendingOrder{false};

void recordError(cudaError_t code, const std::string& message)
{
    std::lock_guard<std::mutex> lock(errorMutex);
    if (lastError == cudaSuccess)
        lastError = code;
    if (firstMessage.empty())
        firstMessage = message;
}

std::string site(const LaunchConfig& cfg)
{
    return "the kernel launched at " + std::string(cfg.file) + ":" + std::to_string(cfg.line);
}

std::string triple(const uint3& v)
{
    return "(" + std::to_string(v.x) + ", " + std::to_string(v.y) + ", " + std::to_string(v.z) + ")";
}

std::string triple(const dim3& v)
{
    return triple(uint3{v.x, v.y, v.z});
}

std::string where(const Fiber& f, const LaunchConfig& cfg)
{
    return "thread " + triple(f.idx.thread) + " of block " + triple(f.idx.block) + " of " + site(cfg);
}

std::string hexAddress(const void* p)
{
    char text[32];
    std::snprintf(text, sizeof text, "%p", p);
    return text;
}

std::string at(const char* file, int line)
{
    return std::string(file) + ":" + std::to_string(line);
}

// Ends the running fiber with `message`; the scheduler abandons the block and fails the launch.
[[noreturn]] void failInFiber(const char* message)
{
    Worker& w = *tlsWorker;
    Fiber& f = *w.running;
    w.error = where(f, *w.launch->cfg) + ": " + message;
    f.state = State::Done;
    switchContext(f.ctx, w.scheduler);
    std::abort(); // never resumed
}

[[noreturn]] void fiberMain()
{
    Worker& w = *tlsWorker;
    w.launch->thread(w.launch->closure);
    Fiber& f = *w.running;
    f.state = State::Done;
    switchContext(f.ctx, w.scheduler);
    std::abort(); // never resumed
}

// Why no thread of the block can go on, when none is runnable and no barrier is complete.
std::string describeStall(const Worker& w, unsigned n)
{
    const LaunchConfig& cfg = *w.launch->cfg;
    const std::string block = "block " + triple(w.fibers[0].idx.block) + " of " + site(cfg);
    // a warp with lanes at a warp instruction that cannot complete
    for (unsigned w0 = 0; w0 < n; w0 += kWarpSize)
    {
        const unsigned lanes = std::min(kWarpSize, n - w0);
        const Fiber* waiting = nullptr;
        for (unsigned l = 0; l < lanes && !waiting; ++l)
            if (w.fibers[w0 + l].state == State::AtWarp)
                waiting = &w.fibers[w0 + l];
        if (!waiting)
            continue;
        const std::string head = "warp " + std::to_string(w0 / kWarpSize) + " of " + block + ": lane "
            + std::to_string(waiting->linear - w0) + " waits at the full-warp " + warpOpName(waiting->request.op)
            + " at " + at(waiting->file, waiting->line);
        if (lanes < kWarpSize)
            return head + ", but the warp has only " + std::to_string(lanes) + " lanes (the block has "
                + std::to_string(n) + " threads)";
        for (unsigned l = 0; l < lanes; ++l)
        {
            const Fiber& f = w.fibers[w0 + l];
            if (f.state == State::Done)
                return head + ", but lane " + std::to_string(l) + " has exited";
            if (f.state == State::AtSyncthreads)
                return head + ", but lane " + std::to_string(l) + " waits at __syncthreads at " + at(f.file, f.line);
            if (f.state == State::AtWarp && (f.file != waiting->file || f.line != waiting->line))
                return head + ", but lane " + std::to_string(l) + " waits at the " + warpOpName(f.request.op) + " at "
                    + at(f.file, f.line);
        }
    }
    // only __syncthreads waiters and exited threads are left
    std::map<std::string, unsigned> sites;
    unsigned done = 0;
    for (unsigned t = 0; t < n; ++t)
    {
        if (w.fibers[t].state == State::Done)
            ++done;
        else
            ++sites[at(w.fibers[t].file, w.fibers[t].line)];
    }
    std::string text = block + ": ";
    if (sites.size() > 1)
    {
        text += "its threads wait at different __syncthreads:";
        for (const auto& [where_, count] : sites)
            text += " " + std::to_string(count) + " at " + where_ + ";";
        text.pop_back();
        return text;
    }
    return text + std::to_string(done) + " of its " + std::to_string(n) + " threads exited while the others wait at "
        + "__syncthreads at " + sites.begin()->first + " (a barrier every thread of the block must reach)";
}

uint16_t halfAt(const void* p, int element)
{
    uint16_t h;
    std::memcpy(&h, static_cast<const unsigned char*>(p) + 2 * element, 2);
    return h;
}

// The 16-bit element `i` (0 low, 1 high) of a register, as a float of its type.
float unpack(uint32_t reg, int i, bool bf16)
{
    const uint16_t h = uint16_t(reg >> (16 * i));
    if (bf16)
    {
        const uint32_t bits = uint32_t(h) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
    }
    __half_raw raw;
    raw.x = h;
    return __half2float(__half(raw));
}

float tf32(uint32_t reg)
{
    const uint32_t bits = reg & 0xffffe000u; // the tensor core reads 10 bits of mantissa
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Carries out the warp instruction its 32 lanes (fibers lane[0..31]) wait at, all operands read now,
// as the device reads them at once; "" or what was wrong with it.
std::string performWarp(Fiber* const* lane)
{
    const WarpRequest& first = lane[0]->request;
    for (unsigned l = 1; l < kWarpSize; ++l)
    {
        const WarpRequest& r = lane[l]->request;
        if (r.op != first.op || r.count != first.count || r.flag != first.flag)
            return std::string("lanes disagree about the ") + warpOpName(first.op) + " (shape or qualifiers)";
    }
    switch (first.op)
    {
    case WarpOp::Shuffle:
    {
        uint64_t value[kWarpSize];
        for (unsigned l = 0; l < kWarpSize; ++l)
            value[l] = lane[l]->request.bits;
        for (unsigned l = 0; l < kWarpSize; ++l)
            *static_cast<uint64_t*>(lane[l]->request.out) = value[l ^ unsigned(lane[l]->request.laneMask)];
        return "";
    }
    case WarpOp::Ldmatrix:
    {
        for (unsigned l = 0; l < kWarpSize; ++l)
            if (l < 8u * unsigned(first.count) && reinterpret_cast<uintptr_t>(lane[l]->request.address) % 16 != 0)
                return "ldmatrix: lane " + std::to_string(l) + "'s row address " + hexAddress(lane[l]->request.address)
                    + " is not 16-byte aligned";
        // matrix m's eight rows are those lanes 8m..8m+7 point at; lane l receives, of each, row l/4 and
        // columns 2(l%4), 2(l%4)+1, or with .trans column l/4 of rows 2(l%4), 2(l%4)+1
        uint32_t result[kWarpSize][4];
        for (unsigned l = 0; l < kWarpSize; ++l)
            for (int m = 0; m < first.count; ++m)
            {
                const unsigned g = l / 4;
                const unsigned t = l % 4;
                uint16_t lo, hi;
                if (first.flag)
                {
                    lo = halfAt(lane[8 * m + 2 * t]->request.address, int(g));
                    hi = halfAt(lane[8 * m + 2 * t + 1]->request.address, int(g));
                }
                else
                {
                    lo = halfAt(lane[8 * m + g]->request.address, int(2 * t));
                    hi = halfAt(lane[8 * m + g]->request.address, int(2 * t + 1));
                }
                result[l][m] = uint32_t(lo) | (uint32_t(hi) << 16);
            }
        for (unsigned l = 0; l < kWarpSize; ++l)
            std::memcpy(lane[l]->request.out, result[l], sizeof(uint32_t) * size_t(first.count));
        return "";
    }
    case WarpOp::Mma16816:
    case WarpOp::Mma1688Tf32:
    {
        const bool tf = first.op == WarpOp::Mma1688Tf32;
        const int K = tf ? 8 : 16;
        float A[16][16];
        float B[16][8];
        for (unsigned l = 0; l < kWarpSize; ++l)
        {
            const unsigned g = l / 4;
            const unsigned t = l % 4;
            const uint32_t* a = lane[l]->request.a;
            const uint32_t* b = lane[l]->request.b;
            if (tf)
            {
                A[g][t] = tf32(a[0]);
                A[g + 8][t] = tf32(a[1]);
                A[g][t + 4] = tf32(a[2]);
                A[g + 8][t + 4] = tf32(a[3]);
                B[t][g] = tf32(b[0]);
                B[t + 4][g] = tf32(b[1]);
            }
            else
            {
                for (int i = 0; i < 2; ++i)
                {
                    A[g][2 * t + i] = unpack(a[0], i, first.flag);
                    A[g + 8][2 * t + i] = unpack(a[1], i, first.flag);
                    A[g][2 * t + 8 + i] = unpack(a[2], i, first.flag);
                    A[g + 8][2 * t + 8 + i] = unpack(a[3], i, first.flag);
                    B[2 * t + i][g] = unpack(b[0], i, first.flag);
                    B[2 * t + 8 + i][g] = unpack(b[1], i, first.flag);
                }
            }
        }
        // products are exact in float32 for these inputs; the sum is kept in double and added to the
        // accumulator once
        for (unsigned l = 0; l < kWarpSize; ++l)
        {
            float* d = static_cast<float*>(lane[l]->request.out);
            const unsigned g = l / 4;
            const unsigned t = l % 4;
            for (int r = 0; r < 4; ++r)
            {
                const unsigned row = g + 8 * unsigned(r / 2);
                const unsigned col = 2 * t + unsigned(r % 2);
                double sum = 0.0;
                for (int k = 0; k < K; ++k)
                    sum += double(A[row][k]) * double(B[k][col]);
                d[r] = float(double(d[r]) + sum);
            }
        }
        return "";
    }
    }
    return "unknown warp instruction";
}

// Carries out and releases every warp whose 32 lanes wait at the same warp instruction; false when
// none did. A failed instruction leaves its text in w.error.
bool releaseWarps(Worker& w, unsigned n)
{
    bool released = false;
    for (unsigned w0 = 0; w0 + kWarpSize <= n; w0 += kWarpSize)
    {
        const Fiber& first = w.fibers[w0];
        bool all = first.state == State::AtWarp;
        for (unsigned l = 1; l < kWarpSize && all; ++l)
        {
            const Fiber& f = w.fibers[w0 + l];
            all = f.state == State::AtWarp && f.file == first.file && f.line == first.line;
        }
        if (!all)
            continue;
        Fiber* lanes[kWarpSize];
        for (unsigned l = 0; l < kWarpSize; ++l)
            lanes[l] = &w.fibers[w0 + l];
        const std::string failed = performWarp(lanes);
        if (!failed.empty())
        {
            w.error = "warp " + std::to_string(w0 / kWarpSize) + " of block " + triple(first.idx.block) + " of "
                + site(*w.launch->cfg) + " at " + at(first.file, first.line) + ": " + failed;
            return false;
        }
        for (unsigned l = 0; l < kWarpSize; ++l)
            w.fibers[w0 + l].state = State::Runnable;
        released = true;
    }
    return released;
}

bool releaseSyncthreads(Worker& w, unsigned n)
{
    const Fiber& first = w.fibers[0];
    for (unsigned t = 0; t < n; ++t)
    {
        const Fiber& f = w.fibers[t];
        if (f.state != State::AtSyncthreads || f.file != first.file || f.line != first.line)
            return false;
    }
    for (unsigned t = 0; t < n; ++t)
        w.fibers[t].state = State::Runnable;
    return true;
}

bool runBlock(Worker& w, uint3 block)
{
    const Launch& L = *w.launch;
    const LaunchConfig& cfg = *L.cfg;
    const unsigned n = cfg.block.x * cfg.block.y * cfg.block.z;
    if (w.fibers.size() < n)
        w.fibers.resize(n);
    for (unsigned t = 0; t < n; ++t)
    {
        Fiber& f = w.fibers[t];
        if (!f.stack)
            f.stack = std::make_unique<Stack>();
        f.idx = {uint3{t % cfg.block.x, t / cfg.block.x % cfg.block.y, t / (cfg.block.x * cfg.block.y)}, block,
            cfg.block, cfg.grid};
        f.linear = t;
        f.state = State::Runnable;
        f.copies.clear();
        f.groupEnds.clear();
        prepareContext(f.ctx, f.stack->low(), kStackBytes, fiberMain);
    }
    std::fill(w.shared.begin(), w.shared.end(), kFill);
    w.error.clear();
    for (;;)
    {
        for (unsigned k = 0; k < n; ++k)
        {
            Fiber& f = w.fibers[L.descending ? n - 1 - k : k];
            if (f.state != State::Runnable)
                continue;
            w.running = &f;
            current = &f.idx;
            switchContext(w.scheduler, f.ctx);
            if (!w.error.empty())
                break;
        }
        w.running = nullptr;
        current = nullptr;
        if (!w.error.empty())
            return false;
        if (std::all_of(w.fibers.begin(), w.fibers.begin() + n, [](const Fiber& f) { return f.state == State::Done; }))
            break;
        if (releaseWarps(w, n) || releaseSyncthreads(w, n))
            continue;
        if (w.error.empty())
            w.error = describeStall(w, n);
        return false;
    }
    const auto canary = w.shared.begin() + ptrdiff_t(cfg.sharedBytes);
    if (std::any_of(canary, w.shared.end(), [](unsigned char b) { return b != kFill; }))
    {
        w.error = "block " + triple(block) + " of " + site(cfg) + " wrote past the end of its "
            + std::to_string(cfg.sharedBytes) + " bytes of dynamic shared memory";
        return false;
    }
    return true;
}

// ---------------------------------------------------------------- guarded buffers and faults

struct Guarded
{
    unsigned char* base; // the mapping: guard page, body, guard page
    size_t total;
    unsigned char* body; // between the guard pages, filled with 0xff around the buffer
    size_t bodyBytes;
    size_t bytes;
};

std::mutex guardedMutex;
std::map<const void*, Guarded> guarded; // by the buffer's address

// Where `addr` lies relative to a guarded buffer whose guard pages hold it, or "" (the handler cannot
// wait for the lock: a fault while another thread allocates is described without it).
std::string nearBuffer(const void* addr)
{
    if (!guardedMutex.try_lock())
        return "";
    std::string text;
    const auto* a = static_cast<const unsigned char*>(addr);
    for (const auto& [buffer, g] : guarded)
    {
        const auto* start = static_cast<const unsigned char*>(buffer);
        if (a >= g.body + g.bodyBytes && a < g.base + g.total)
            text = std::to_string(a - (start + g.bytes)) + " bytes past the end of the " + std::to_string(g.bytes)
                + "-byte buffer at " + hexAddress(buffer);
        else if (a >= g.base && a < g.body)
            text = std::to_string(start - a) + " bytes before the " + std::to_string(g.bytes) + "-byte buffer at "
                + hexAddress(buffer);
    }
    guardedMutex.unlock();
    return text;
}

struct sigaction previousSegv;
struct sigaction previousBus;

// Names the emulated thread that faulted, then hands the signal back to whoever had it before (the
// default action, or Python's faulthandler), which ends the process as the fault would have.
void onFault(int sig, siginfo_t* info, void*)
{
    const Worker* w = tlsWorker;
    if (w && w->running && w->launch)
    {
        const Fiber& f = *w->running;
        bool stackOverflow = false;
        for (const Fiber& other : w->fibers)
            stackOverflow = stackOverflow || (other.stack && other.stack->guardHolds(info->si_addr));
        const std::string near = stackOverflow ? "the emulated thread overflowed its stack" : nearBuffer(info->si_addr);
        char text[1024];
        const int len = std::snprintf(text, sizeof text,
            "attnx emulator: %s at %p by thread (%u, %u, %u) of block (%u, %u, %u) of the kernel launched at "
            "%s:%d (%s)\n",
            sig == SIGSEGV ? "invalid memory access" : "bus error", info->si_addr, f.idx.thread.x,
            f.idx.thread.y, f.idx.thread.z, f.idx.block.x, f.idx.block.y, f.idx.block.z,
            w->launch->cfg->file, w->launch->cfg->line,
            near.empty() ? "in no buffer of attnx_emu_alloc or its guard pages" : near.c_str());
        if (len > 0 && write(STDERR_FILENO, text, size_t(std::min(len, int(sizeof text) - 1))) < 0)
            _exit(139);
    }
    sigaction(sig, sig == SIGSEGV ? &previousSegv : &previousBus, nullptr);
}

void installFaultHandlers()
{
    struct sigaction sa = {};
    sa.sa_sigaction = onFault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previousSegv);
    sigaction(SIGBUS, &sa, &previousBus);
}

// ---------------------------------------------------------------- the worker pool

// Worker threads live as long as the process (never joined: a library cannot know when it is the
// last user). Each has an alternate signal stack, so a fiber that overflows its stack is reported.
class Pool
{
public:
    static Pool& get()
    {
        static Pool* pool = new Pool(std::max(1u, std::thread::hardware_concurrency()));
        return *pool;
    }

    // job(worker) runs on every worker thread; returns when all are done.
    void run(const std::function<void(Worker&)>& job)
    {
        std::unique_lock<std::mutex> lock(mutex_);
        job_ = &job;
        pending_ = unsigned(threads_.size());
        ++generation_;
        wake_.notify_all();
        done_.wait(lock, [&] { return pending_ == 0; });
        job_ = nullptr;
    }

private:
    explicit Pool(unsigned n)
    {
        installFaultHandlers();
        for (unsigned i = 0; i < n; ++i)
            threads_.emplace_back([this] { loop(); });
        for (auto& t : threads_)
            t.detach();
    }

    void loop()
    {
        std::vector<unsigned char> altStack(64 * 1024);
        stack_t ss = {};
        ss.ss_sp = altStack.data();
        ss.ss_size = altStack.size();
        sigaltstack(&ss, nullptr);
        Worker worker;
        tlsWorker = &worker;
        uint64_t seen = 0;
        for (;;)
        {
            const std::function<void(Worker&)>* job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_ != seen; });
                seen = generation_;
                job = job_;
            }
            (*job)(worker);
            std::lock_guard<std::mutex> lock(mutex_);
            if (--pending_ == 0)
                done_.notify_all();
        }
    }

    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    const std::function<void(Worker&)>* job_ = nullptr;
    unsigned pending_ = 0;
    uint64_t generation_ = 0;
};

std::mutex attributeMutex;
std::map<const void*, int> maxDynamicShared; // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel

// What a device would refuse about this launch, or "".
std::string checkConfig(const LaunchConfig& cfg, const void* kernel)
{
    const dim3& b = cfg.block;
    const dim3& g = cfg.grid;
    if (b.x < 1 || b.y < 1 || b.z < 1 || b.x > 1024 || b.y > 1024 || b.z > 64 || uint64_t(b.x) * b.y * b.z > 1024)
        return "block " + triple(b) + " is not 1 to 1024 threads (x, y <= 1024, z <= 64)";
    if (g.x < 1 || g.y < 1 || g.z < 1 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
        return "grid " + triple(g) + " is outside 1 ... (2^31 - 1, 65535, 65535)";
    if (cfg.sharedBytes > kDefaultSharedBytes)
    {
        std::lock_guard<std::mutex> lock(attributeMutex);
        const auto it = maxDynamicShared.find(kernel);
        const int optIn = it == maxDynamicShared.end() ? int(kDefaultSharedBytes) : it->second;
        if (cfg.sharedBytes > size_t(optIn))
            return std::to_string(cfg.sharedBytes) + " bytes of dynamic shared memory, above the "
                + std::to_string(optIn) + " the kernel opted in to (cudaFuncAttributeMaxDynamicSharedMemorySize)";
    }
    return "";
}

} // namespace

// ---------------------------------------------------------------- what attnx_emulation.h declares

void launch(const LaunchConfig& cfg, const void* kernel, void (*thread)(void*), void* closure)
{
    Pool& pool = Pool::get();
    const std::string refused = checkConfig(cfg, kernel);
    if (!refused.empty())
    {
        recordError(cudaErrorInvalidConfiguration, site(cfg) + ": " + refused);
        return;
    }
    const Launch L{&cfg, thread, closure, descendingOrder.load()};
    const uint64_t blocks = uint64_t(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex firstErrorMutex;
    std::string firstError;
    pool.run([&](Worker& w) {
        w.launch = &L;
        w.shared.assign(cfg.sharedBytes + kCanaryBytes, kFill);
        for (uint64_t b; !failed.load() && (b = next.fetch_add(1)) < blocks;)
        {
            const uint3 block{unsigned(b % cfg.grid.x), unsigned(b / cfg.grid.x % cfg.grid.y),
                unsigned(b / (uint64_t(cfg.grid.x) * cfg.grid.y))};
            if (!runBlock(w, block))
            {
                std::lock_guard<std::mutex> lock(firstErrorMutex);
                if (firstError.empty())
                    firstError = w.error;
                failed = true;
            }
        }
        w.launch = nullptr;
    });
    if (failed)
        recordError(cudaErrorLaunchFailure, firstError);
}

cudaError_t takeLastError()
{
    std::lock_guard<std::mutex> lock(errorMutex);
    const cudaError_t e = lastError;
    lastError = cudaSuccess;
    return e;
}

cudaError_t setFuncAttribute(const void* kernel, cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
    {
        recordError(cudaErrorInvalidValue, "cudaFuncSetAttribute: only cudaFuncAttributeMaxDynamicSharedMemorySize "
                                           "is emulated, got attribute " + std::to_string(int(attr)));
        return cudaErrorInvalidValue;
    }
    if (value < 0 || size_t(value) > kMaxSharedBytes)
    {
        recordError(cudaErrorInvalidValue, "cudaFuncSetAttribute: " + std::to_string(value)
                + " bytes of dynamic shared memory is above the " + std::to_string(kMaxSharedBytes)
                + " that sm_86 and sm_89 allow");
        return cudaErrorInvalidValue;
    }
    std::lock_guard<std::mutex> lock(attributeMutex);
    maxDynamicShared[kernel] = value;
    return cudaSuccess;
}

void syncthreads(const char* file, int line)
{
    Worker& w = *tlsWorker;
    Fiber& f = *w.running;
    f.state = State::AtSyncthreads;
    f.file = file;
    f.line = line;
    switchContext(f.ctx, w.scheduler);
}

namespace
{

// Parks the running fiber at a warp instruction until its warp has carried it out.
void waitForWarp(const char* file, int line, const WarpRequest& request)
{
    Worker& w = *tlsWorker;
    Fiber& f = *w.running;
    f.request = request;
    f.state = State::AtWarp;
    f.file = file;
    f.line = line;
    switchContext(f.ctx, w.scheduler);
}

} // namespace

uint64_t shuffleXor(const char* file, int line, unsigned mask, uint64_t bits, int laneMask, int width)
{
    if (mask != 0xffffffffu || width != int(kWarpSize) || laneMask < 0 || laneMask >= int(kWarpSize))
        failInFiber("only full-warp __shfl_xor_sync (mask 0xffffffff, width 32, lane mask 0 to 31) is emulated");
    uint64_t result = 0;
    WarpRequest r;
    r.op = WarpOp::Shuffle;
    r.bits = bits;
    r.laneMask = laneMask;
    r.out = &result;
    waitForWarp(file, line, r);
    return result;
}

void ldmatrix(const char* file, int line, uint32_t* regs, int count, bool trans, const void* rowAddress)
{
    if (count != 1 && count != 2 && count != 4)
        failInFiber("ldmatrix loads 1, 2 or 4 matrices");
    WarpRequest r;
    r.op = WarpOp::Ldmatrix;
    r.address = rowAddress;
    r.count = count;
    r.flag = trans;
    r.out = regs;
    waitForWarp(file, line, r);
}

void mma16816(const char* file, int line, float* d, const uint32_t* a, const uint32_t* b, bool bf16)
{
    WarpRequest r;
    r.op = WarpOp::Mma16816;
    r.a = a;
    r.b = b;
    r.flag = bf16;
    r.out = d;
    waitForWarp(file, line, r);
}

void mma1688Tf32(const char* file, int line, float* d, const uint32_t* a, const uint32_t* b)
{
    WarpRequest r;
    r.op = WarpOp::Mma1688Tf32;
    r.a = a;
    r.b = b;
    r.out = d;
    waitForWarp(file, line, r);
}

void cpAsync16(void* dst, const void* src, int srcBytes)
{
    if (reinterpret_cast<uintptr_t>(dst) % 16 != 0 || (srcBytes > 0 && reinterpret_cast<uintptr_t>(src) % 16 != 0))
        failInFiber("cp.async of 16 bytes needs 16-byte aligned source and destination");
    if (srcBytes < 0 || srcBytes > 16)
        failInFiber("cp.async: source size outside 0..16");
    tlsWorker->running->copies.push_back({dst, src, srcBytes});
}

void cpAsyncCommit()
{
    Fiber& f = *tlsWorker->running;
    f.groupEnds.push_back(f.copies.size());
}

void cpAsyncWait(int pendingGroups)
{
    Fiber& f = *tlsWorker->running;
    const size_t groups = f.groupEnds.size();
    if (groups <= size_t(pendingGroups))
        return;
    const size_t done = f.groupEnds[groups - size_t(pendingGroups) - 1]; // copies of the groups now complete
    for (size_t i = 0; i < done; ++i)
    {
        const PendingCopy& c = f.copies[i];
        std::memset(c.dst, 0, 16);
        if (c.srcBytes > 0)
            std::memcpy(c.dst, c.src, size_t(c.srcBytes));
    }
    f.copies.erase(f.copies.begin(), f.copies.begin() + ptrdiff_t(done));
    f.groupEnds.erase(f.groupEnds.begin(), f.groupEnds.begin() + ptrdiff_t(groups - size_t(pendingGroups)));
    for (size_t& end : f.groupEnds)
        end -= done;
}

void* dynamicShared()
{
    return tlsWorker->shared.data();
}

} // namespace attnx_emu

// ---------------------------------------------------------------- the C API (attnxEmulatorApi.h)

extern "C" void attnx_emu_set_schedule(int descending)
{
    attnx_emu::descendingOrder = descending != 0;
}

extern "C" const char* attnx_emu_error(void)
{
    thread_local std::string copy;
    std::lock_guard<std::mutex> lock(attnx_emu::errorMutex);
    copy = attnx_emu::firstMessage;
    return copy.c_str();
}

extern "C" void attnx_emu_clear_error(void)
{
    std::lock_guard<std::mutex> lock(attnx_emu::errorMutex);
    attnx_emu::firstMessage.clear();
    attnx_emu::lastError = cudaSuccess;
}

extern "C" void* attnx_emu_alloc(size_t bytes)
{
    using namespace attnx_emu;
    const size_t page = attnx_emu::pageSize();
    const size_t bodyBytes = (bytes + 15 + page - 1) / page * page;
    const size_t total = bodyBytes + 2 * page;
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return nullptr;
    auto* base = static_cast<unsigned char*>(p);
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + bodyBytes, page, PROT_NONE);
    unsigned char* body = base + page;
    std::memset(body, attnx_emu::kFill, bodyBytes);
    // as close to the upper guard page as 16-byte alignment allows
    auto* buffer = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(body + bodyBytes) - bytes)
        & ~uintptr_t(15));
    std::lock_guard<std::mutex> lock(guardedMutex);
    guarded[buffer] = {base, total, body, bodyBytes, bytes};
    return buffer;
}

extern "C" void attnx_emu_free(void* buffer)
{
    using namespace attnx_emu;
    std::lock_guard<std::mutex> lock(guardedMutex);
    const auto it = guarded.find(buffer);
    if (it == guarded.end())
        return;
    munmap(it->second.base, it->second.total);
    guarded.erase(it);
}

extern "C" int attnx_emu_guards_intact(const void* buffer)
{
    using namespace attnx_emu;
    std::lock_guard<std::mutex> lock(guardedMutex);
    const auto it = guarded.find(buffer);
    if (it == guarded.end())
        return -1;
    const Guarded& g = it->second;
    auto* start = static_cast<const unsigned char*>(buffer);
    const auto slack = [](const unsigned char* a, const unsigned char* b) {
        return std::all_of(a, b, [](unsigned char x) { return x == attnx_emu::kFill; });
    };
    return slack(g.body, start) && slack(start + g.bytes, g.body + g.bodyBytes) ? 1 : 0;
}
