#include "sparseAttentionPlugin.h"

#include "sparseAttentionKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
namespace
{
// Input positions (spec order): q, k, v → y.
constexpr int32_t kQ = 0;
constexpr int32_t kK = 1;
constexpr int32_t kV = 2;
char const* const kInputNames[] = {"q", "k", "v"};
} // namespace

int32_t SparseAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
    DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept
{
    return qkvOutputShape(inputs, nbInputs, outputs, nbOutputs);
}

bool SparseAttentionPlugin::checkShapes(Dims const* dims, int32_t) const noexcept
{
    Dims const& q = dims[kQ];
    Dims const& k = dims[kK];
    Dims const& v = dims[kV];
    std::string const n = kName;
    if (!qkvOfRank4(kName, dims))
        return false;
    bool bad = differ(q.d[3], k.d[3]);
    for (int32_t i = 0; i < 3; ++i)
        bad = bad || differ(q.d[i], k.d[i]) || differ(q.d[i], v.d[i]);
    if (bad)
    {
        logError(n + ": " + inputsText(dims, kInputNames, 3)
            + "; expected q and k [B, H, N, D], v [B, H, N, E] (keys as many as queries)");
        return false;
    }
    return headDimsWithin(kName, "D", q, v, ATTNX_SPARSE_ATTENTION_MAX_HEAD_DIM);
}

int32_t SparseAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept
{
    Dims const dims[] = {inputDesc[kQ].dims, inputDesc[kK].dims, inputDesc[kV].dims};
    Dims const& q = dims[kQ];
    // the entry point takes q's sizes for k: a k or v that disagrees must not reach it
    if (!checkShapes(dims, 3))
        return -1;
    int32_t const status = attnx_sparse_attention_forward(inputs[kQ], inputs[kK], inputs[kV], outputs[0], q.d[0],
        q.d[1], q.d[2], q.d[3], dims[kV].d[3], mParams.pattern, mParams.window, mParams.dilation, mParams.stride,
        mParams.block, mParams.causal, mParams.scale, kernelDtype(inputDesc[kQ].type), static_cast<void*>(stream));
    return kernelResult(status, inputDesc, kInputNames, 3);
}

} // namespace attnx
