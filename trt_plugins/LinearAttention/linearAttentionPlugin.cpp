#include "linearAttentionPlugin.h"

#include "linearAttentionKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
bool LinearAttentionPlugin::outputShapes(DimsExprs const* inputs, DimsExprs* outputs) const noexcept
{
    if (!qkvOutputShape(inputs, outputs))
        return false;
    DimsExprs const& q = inputs[Io::kQ];
    DimsExprs const& v = inputs[Io::kV];
    DimsExprs& s = outputs[Io::kStateSOut]; // [B, H, D, E]
    s.nbDims = 4;
    s.d[0] = q.d[0];
    s.d[1] = q.d[1];
    s.d[2] = q.d[3];
    s.d[3] = v.d[3];
    DimsExprs& z = outputs[Io::kStateZOut]; // [B, H, D]
    z.nbDims = 3;
    z.d[0] = q.d[0];
    z.d[1] = q.d[1];
    z.d[2] = q.d[3];
    return true;
}

bool LinearAttentionPlugin::checkShapes(Dims const* dims, int32_t nbInputs) const noexcept
{
    Dims const& q = dims[Io::kQ];
    Dims const& k = dims[Io::kK];
    Dims const& v = dims[Io::kV];
    std::string const n = kName;
    if (!qkvOfRank4(kName, Io::kInputNames, dims))
        return false;
    for (int32_t i = 0; i < 2; ++i)
    {
        if (differ(q.d[i], k.d[i]) || differ(k.d[i], v.d[i]))
        {
            logError(n + ": batch/head sizes differ: " + inputsText(dims, Io::kInputNames, 3));
            return false;
        }
    }
    if (differ(q.d[3], k.d[3]) || differ(k.d[2], v.d[2]))
    {
        logError(n + ": " + inputsText(dims, Io::kInputNames, 3)
            + "; expected q [B, H, N, D], k [B, H, M, D], v [B, H, M, E]");
        return false;
    }
    if (!causalLengthsAgree(kName, mParams.causal, q, k)
        || !headDimsWithin(kName, "D", q, v, ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM))
        return false;
    if (nbInputs > Io::kStateS && (dims[Io::kStateS].nbDims != 4 || dims[Io::kStateZ].nbDims != 3))
    {
        logError(n + ": state_s " + dimsText(dims[Io::kStateS]) + ", state_z " + dimsText(dims[Io::kStateZ])
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
    if (!mParams.causal || nbInputs < Io::kNbRequiredInputs)
        return 0;
    Dims const& q = inputs[Io::kQ].max;
    Dims const& v = inputs[Io::kV].max;
    if (q.nbDims != 4 || v.nbDims != 4)
        return 0;
    return attnx_linear_attention_workspace_size(
        q.d[0], q.d[1], q.d[2], q.d[3], v.d[3], 1, kernelDtype(inputs[Io::kQ].desc.type));
}

int32_t LinearAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& q = inputDesc[Io::kQ].dims;
    Dims const& k = inputDesc[Io::kK].dims;
    Dims const& v = inputDesc[Io::kV].dims;
    bool const hasState = configuredInputs() > Io::kStateS;
    int32_t const status = attnx_linear_attention_forward(inputs[Io::kQ], inputs[Io::kK], inputs[Io::kV],
        hasState ? static_cast<float const*>(inputs[Io::kStateS]) : nullptr,
        hasState ? static_cast<float const*>(inputs[Io::kStateZ]) : nullptr, outputs[Io::kY],
        static_cast<float*>(outputs[Io::kStateSOut]), static_cast<float*>(outputs[Io::kStateZOut]), workspace, q.d[0],
        q.d[1], q.d[2], k.d[2], q.d[3], v.d[3], mParams.causal, mParams.featureMap, mParams.normalize, mParams.eps,
        mParams.chunkSize, kernelDtype(inputDesc[Io::kQ].type), static_cast<void*>(stream));
    return kernelResult(status, inputDesc, 3);
}

} // namespace attnx
