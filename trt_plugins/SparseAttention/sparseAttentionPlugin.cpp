#include "sparseAttentionPlugin.h"

#include "sparseAttentionKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
bool SparseAttentionPlugin::outputShapes(DimsExprs const* inputs, DimsExprs* outputs) const noexcept
{
    return qkvOutputShape(inputs, outputs);
}

bool SparseAttentionPlugin::checkShapes(Dims const* dims, int32_t) const noexcept
{
    Dims const& q = dims[Io::kQ];
    Dims const& k = dims[Io::kK];
    Dims const& v = dims[Io::kV];
    std::string const n = kName;
    if (!qkvOfRank4(kName, Io::kInputNames, dims))
        return false;
    bool bad = differ(q.d[3], k.d[3]);
    for (int32_t i = 0; i < 3; ++i)
        bad = bad || differ(q.d[i], k.d[i]) || differ(q.d[i], v.d[i]);
    if (bad)
    {
        logError(n + ": " + inputsText(dims, Io::kInputNames, Io::kNbInputs)
            + "; expected q and k [B, H, N, D], v [B, H, N, E] (keys as many as queries)");
        return false;
    }
    return headDimsWithin(kName, "D", q, v, ATTNX_SPARSE_ATTENTION_MAX_HEAD_DIM);
}

int32_t SparseAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept
{
    Dims const dims[Io::kNbInputs] = {inputDesc[Io::kQ].dims, inputDesc[Io::kK].dims, inputDesc[Io::kV].dims};
    Dims const& q = dims[Io::kQ];
    // the entry point takes q's sizes for k: a k or v that disagrees must not reach it
    if (!checkShapes(dims, Io::kNbInputs))
        return -1;
    int32_t const status = attnx_sparse_attention_forward(inputs[Io::kQ], inputs[Io::kK], inputs[Io::kV],
        outputs[Io::kY], q.d[0], q.d[1], q.d[2], q.d[3], dims[Io::kV].d[3], mParams.pattern, mParams.window,
        mParams.dilation, mParams.stride, mParams.block, mParams.causal, mParams.scale, mParams.lookBack,
        mParams.lookAhead,
        kernelDtype(inputDesc[Io::kQ].type), static_cast<void*>(stream));
    return kernelResult(status, inputDesc, Io::kNbInputs);
}

} // namespace attnx
