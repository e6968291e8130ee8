// Stands in for CUDA's cuda_runtime.h in emulated builds (this folder comes first on the include
// path): the kernels' sources include it unchanged, and get the emulator's runtime instead.
#pragma once

#include "attnx_emulation.h"
