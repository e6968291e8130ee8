#include "performerFeaturesPlugin.h"

#include "performerFeaturesKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
namespace
{
// Input positions (spec order): x, w → features.
constexpr int32_t kX = 0;
constexpr int32_t kW = 1;
char const* const kInputNames[] = {"x", "w"};
} // namespace

int32_t PerformerFeaturesPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
    DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept
{
    if (!checkIoCount(nbInputs, nbOutputs, "getOutputShapes"))
        return -1;
    if (inputs[kX].nbDims != 4 || inputs[kW].nbDims != 2)
    {
        logError(std::string(kName) + ": inputs of rank " + std::to_string(inputs[kX].nbDims) + " (x) and "
            + std::to_string(inputs[kW].nbDims) + " (w); expected x [B, H, N, D] and w [M, D]");
        return -1;
    }
    DimsExprs const& x = inputs[kX];
    outputs[0].nbDims = 4; // features [B, H, N, M]
    outputs[0].d[0] = x.d[0];
    outputs[0].d[1] = x.d[1];
    outputs[0].d[2] = x.d[2];
    outputs[0].d[3] = inputs[kW].d[0];
    return 0;
}

bool PerformerFeaturesPlugin::checkShapes(Dims const* dims, int32_t) const noexcept
{
    Dims const& x = dims[kX];
    Dims const& w = dims[kW];
    std::string const n = kName;
    if (x.nbDims != 4 || w.nbDims != 2)
    {
        logError(n + ": " + inputsText(dims, kInputNames, 2) + "; expected x [B, H, N, D] and w [M, D]");
        return false;
    }
    if (differ(x.d[3], w.d[1]))
    {
        logError(n + ": " + inputsText(dims, kInputNames, 2) + "; the last dims (D) must agree");
        return false;
    }
    if (known(x.d[3]) && x.d[3] > ATTNX_PERFORMER_FEATURES_MAX_HEAD_DIM)
    {
        logError(n + ": head dim D = " + std::to_string(x.d[3]) + "; this plugin supports up to "
            + std::to_string(ATTNX_PERFORMER_FEATURES_MAX_HEAD_DIM));
        return false;
    }
    return true;
}

size_t PerformerFeaturesPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    if (nbInputs != 2 || inputs[kX].max.nbDims != 4)
        return 0;
    Dims const& x = inputs[kX].max;
    return attnx_performer_features_workspace_size(x.d[0], x.d[1], x.d[2], mParams.kind);
}

int32_t PerformerFeaturesPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const dims[] = {inputDesc[kX].dims, inputDesc[kW].dims};
    Dims const& x = dims[kX];
    // the entry point takes D from x alone: a w that disagrees must not reach it
    if (!checkShapes(dims, 2))
        return -1;
    int32_t const status = attnx_performer_features_forward(inputs[kX], inputs[kW], outputs[0], workspace, x.d[0],
        x.d[1], x.d[2], x.d[3], dims[kW].d[0], mParams.kind, mParams.eps, mParams.offset,
        kernelDtype(inputDesc[kX].type), static_cast<void*>(stream));
    return kernelResult(status, inputDesc, kInputNames, 2);
}

} // namespace attnx
