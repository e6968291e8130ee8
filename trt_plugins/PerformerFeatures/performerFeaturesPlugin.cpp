#include "performerFeaturesPlugin.h"

#include "performerFeaturesKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
bool PerformerFeaturesPlugin::outputShapes(DimsExprs const* inputs, DimsExprs* outputs) const noexcept
{
    if (inputs[Io::kX].nbDims != 4 || inputs[Io::kW].nbDims != 2)
    {
        logError(std::string(kName) + ": inputs of rank " + std::to_string(inputs[Io::kX].nbDims) + " (x) and "
            + std::to_string(inputs[Io::kW].nbDims) + " (w); expected x [B, H, N, D] and w [M, D]");
        return false;
    }
    DimsExprs const& x = inputs[Io::kX];
    DimsExprs& features = outputs[Io::kFeatures]; // [B, H, N, M]
    features.nbDims = 4;
    features.d[0] = x.d[0];
    features.d[1] = x.d[1];
    features.d[2] = x.d[2];
    features.d[3] = inputs[Io::kW].d[0];
    return true;
}

bool PerformerFeaturesPlugin::checkShapes(Dims const* dims, int32_t) const noexcept
{
    Dims const& x = dims[Io::kX];
    Dims const& w = dims[Io::kW];
    std::string const n = kName;
    if (x.nbDims != 4 || w.nbDims != 2)
    {
        logError(
            n + ": " + inputsText(dims, Io::kInputNames, Io::kNbInputs) + "; expected x [B, H, N, D] and w [M, D]");
        return false;
    }
    if (differ(x.d[3], w.d[1]))
    {
        logError(n + ": " + inputsText(dims, Io::kInputNames, Io::kNbInputs) + "; the last dims (D) must agree");
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
    if (nbInputs != Io::kNbInputs || inputs[Io::kX].max.nbDims != 4)
        return 0;
    Dims const& x = inputs[Io::kX].max;
    return attnx_performer_features_workspace_size(x.d[0], x.d[1], x.d[2], mParams.kind);
}

int32_t PerformerFeaturesPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const dims[Io::kNbInputs] = {inputDesc[Io::kX].dims, inputDesc[Io::kW].dims};
    Dims const& x = dims[Io::kX];
    // the entry point takes D from x alone: a w that disagrees must not reach it
    if (!checkShapes(dims, Io::kNbInputs))
        return -1;
    int32_t const status = attnx_performer_features_forward(inputs[Io::kX], inputs[Io::kW], outputs[Io::kFeatures],
        workspace, x.d[0], x.d[1], x.d[2], x.d[3], dims[Io::kW].d[0], mParams.kind, mParams.eps, mParams.offset,
        kernelDtype(inputDesc[Io::kX].type), static_cast<void*>(stream));
    return kernelResult(status, inputDesc, Io::kNbInputs);
}

} // namespace attnx
