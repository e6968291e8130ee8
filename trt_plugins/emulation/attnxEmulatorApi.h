// What the emulated kernel library exports beside the kernels' own entry points: the schedule, the
// error the emulator saw, and page-guarded buffers to hand the kernels in place of device memory.
// Free of CUDA headers, for ctypes and C callers.
#pragma once

#include <stddef.h>

#include "attnxKernelApi.h" // ATTNX_API

#ifdef __cplusplus
extern "C" {
#endif

// The order in which a block's threads run between barriers: 0 ascending thread index, 1 descending.
// A kernel that reads shared memory another thread writes without a barrier between them gives
// different results under the two orders.
ATTNX_API void attnx_emu_set_schedule(int descending);

// The first launch failure since attnx_emu_clear_error, in words ("" if none): a configuration the
// device would refuse, threads that wait at different barriers or exit while others wait, a write
// past a launch's dynamic shared memory. An entry point whose launch failed returns ATTNX_ERR_CUDA.
ATTNX_API const char* attnx_emu_error(void);
ATTNX_API void attnx_emu_clear_error(void);

// A buffer of `bytes` (16-byte aligned) that ends within 16 bytes of an inaccessible page and starts
// after one: a kernel that reads or writes past it faults, and the emulator names the thread, block
// and launch site before the process ends. The buffer and the slack around it are filled with 0xff
// bytes (NaN in float32, float16 and bfloat16), so an output element no thread writes stays NaN.
ATTNX_API void* attnx_emu_alloc(size_t bytes);
ATTNX_API void attnx_emu_free(void* buffer);

// 1 when the slack around a buffer of attnx_emu_alloc still holds its 0xff bytes, 0 when something
// wrote there (a write just outside the buffer that did not reach the inaccessible pages), -1 for a
// pointer attnx_emu_alloc did not return.
ATTNX_API int attnx_emu_guards_intact(const void* buffer);

#ifdef __cplusplus
}
#endif
