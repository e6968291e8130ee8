#include "linearAttentionPlugin.h"

#include "linearAttentionKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
namespace
{
// Input and output positions (spec order): q, k, v[, state_s, state_z] → y, state_s_out, state_z_out.
constexpr int32_t kQ = 0;
constexpr int32_t kK = 1;
constexpr int32_t kV = 2;
constexpr int32_t kStateS = 3;
constexpr int32_t kStateZ = 4;
char const* const kInputNames[] = {"q", "k", "v", "state_s", "state_z"};
} // namespace

bool LinearAttentionPlugin::isFloat32Position(int32_t pos, int32_t nbInputs)
{
    return (pos >= kStateS && pos < nbInputs) || pos > nbInputs;
}

int32_t LinearAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
    DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept
{
    if (qkvOutputShape(inputs, nbInputs, outputs, nbOutputs) != 0)
        return -1;
    DimsExprs const& q = inputs[kQ];
    DimsExprs const& v = inputs[kV];
    outputs[1].nbDims = 4; // state_s_out [B, H, D, E]
    outputs[1].d[0] = q.d[0];
    outputs[1].d[1] = q.d[1];
    outputs[1].d[2] = q.d[3];
    outputs[1].d[3] = v.d[3];
    outputs[2].nbDims = 3; // state_z_out [B, H, D]
    outputs[2].d[0] = q.d[0];
    outputs[2].d[1] = q.d[1];
    outputs[2].d[2] = q.d[3];
    return 0;
}

bool LinearAttentionPlugin::checkShapes(Dims const* dims, int32_t nbInputs) const noexcept
{
    Dims const& q = dims[kQ];
    Dims const& k = dims[kK];
    Dims const& v = dims[kV];
    std::string const n = kName;
    if (!qkvOfRank4(kName, dims))
        return false;
    for (int32_t i = 0; i < 2; ++i)
    {
        if (differ(q.d[i], k.d[i]) || differ(k.d[i], v.d[i]))
        {
            logError(n + ": batch/head sizes differ: " + inputsText(dims, kInputNames, 3));
            return false;
        }
    }
    if (differ(q.d[3], k.d[3]) || differ(k.d[2], v.d[2]))
    {
        logError(n + ": " + inputsText(dims, kInputNames, 3)
            + "; expected q [B, H, N, D], k [B, H, M, D], v [B, H, M, E]");
        return false;
    }
    if (!causalLengthsAgree(kName, mParams.causal, q, k)
        || !headDimsWithin(kName, "D", q, v, ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM))
        return false;
    if (nbInputs == 5 && (dims[kStateS].nbDims != 4 || dims[kStateZ].nbDims != 3))
    {
        logError(n + ": state_s " + dimsText(dims[kStateS]) + ", state_z " + dimsText(dims[kStateZ])
            + "; expected [B, H, D, E] and [B, H, D]");
        return false;
    }
    return true;
}

size_t LinearAttentionPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    // non-causal: S and z go straight into state_s_out/state_z_out, which always exist; causal: the
    // state of every chunk on CUDA cores, none on tensor cores, sized for the profile's largest shapes
    if (!mParams.causal || nbInputs < 3)
        return 0;
    Dims const& q = inputs[kQ].max;
    Dims const& v = inputs[kV].max;
    if (q.nbDims != 4 || v.nbDims != 4)
        return 0;
    return attnx_linear_attention_workspace_size(
        q.d[0], q.d[1], q.d[2], q.d[3], v.d[3], 1, kernelDtype(inputs[kQ].desc.type));
}

int32_t LinearAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& q = inputDesc[kQ].dims;
    Dims const& k = inputDesc[kK].dims;
    Dims const& v = inputDesc[kV].dims;
    bool const hasState = configuredInputs() == 5;
    int32_t const status = attnx_linear_attention_forward(inputs[kQ], inputs[kK], inputs[kV],
        hasState ? static_cast<float const*>(inputs[kStateS]) : nullptr,
        hasState ? static_cast<float const*>(inputs[kStateZ]) : nullptr, outputs[0], static_cast<float*>(outputs[1]),
        static_cast<float*>(outputs[2]), workspace, q.d[0], q.d[1], q.d[2], k.d[2], q.d[3], v.d[3], mParams.causal,
        mParams.featureMap, mParams.normalize, mParams.eps, mParams.chunkSize, kernelDtype(inputDesc[kQ].type),
        static_cast<void*>(stream));
    return kernelResult(status, inputDesc, kInputNames, 3);
}

} // namespace attnx
