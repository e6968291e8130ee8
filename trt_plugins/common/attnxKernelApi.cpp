#include "attnxKernelApi.h"

extern "C" const char* attnx_status_string(int status)
{
    switch (status)
    {
    case ATTNX_OK: return "ok";
    case ATTNX_ERR_SHAPE: return "bad shape: every size must be >= 1, sizes must agree (M = N when causal)";
    case ATTNX_ERR_HEAD_DIM: return "head dim above 256";
    case ATTNX_ERR_DTYPE: return "dtype must be float32, float16 or bfloat16";
    case ATTNX_ERR_ATTRIBUTE: return "attribute outside what the op's spec allows";
    case ATTNX_ERR_STATE: return "state_s and state_z (and their outputs) must be given together";
    case ATTNX_ERR_WORKSPACE: return "workspace required but null";
    case ATTNX_ERR_CUDA: return "CUDA kernel launch failed";
    default: return "unknown status";
    }
}
