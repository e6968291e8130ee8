// What every attnx kernel entry point shares: the I/O dtype and status enums and their text. Free of
// TensorRT and of CUDA headers, so ctypes and C callers can use the entry points directly.
#pragma once

#include <stddef.h>
#include <stdint.h>

// exported from libattnx_plugins.so, which hides everything else
#define ATTNX_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

// I/O dtype of an op's attention tensors. Recurrent states and workspaces are always float32.
enum attnx_dtype { ATTNX_DTYPE_FLOAT32 = 0, ATTNX_DTYPE_FLOAT16 = 1, ATTNX_DTYPE_BFLOAT16 = 2 };

enum attnx_status {
    ATTNX_OK = 0,
    ATTNX_ERR_SHAPE = 1,      // a size is < 1, sizes disagree (M != N with causal), or too large to launch
    ATTNX_ERR_HEAD_DIM = 2,   // a head dim above the op's maximum (256)
    ATTNX_ERR_DTYPE = 3,      // not an attnx_dtype
    ATTNX_ERR_ATTRIBUTE = 4,  // an attribute outside what the op's spec allows
    ATTNX_ERR_STATE = 5,      // LinearAttention: state_s without state_z or the reverse (same for the outputs)
    ATTNX_ERR_WORKSPACE = 6,  // workspace needed but null
    ATTNX_ERR_CUDA = 7        // a kernel launch or launch setting failed (cudaGetLastError)
};

// A fixed English text for an attnx_status.
ATTNX_API const char* attnx_status_string(int status);

#ifdef __cplusplus
}
#endif
