#include "reluSquaredAttentionPlugin.h"

#include "reluSquaredAttentionKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
bool ReluSquaredAttentionPlugin::outputShapes(DimsExprs const* inputs, DimsExprs* outputs) const noexcept
{
    return qkvOutputShape(inputs, outputs);
}

bool ReluSquaredAttentionPlugin::checkShapes(Dims const* dims, int32_t nbInputs) const noexcept
{
    Dims const& q = dims[Io::kQ];
    Dims const& k = dims[Io::kK];
    Dims const& v = dims[Io::kV];
    std::string const n = kName;
    if (!qkvOfRank4(kName, Io::kInputNames, dims))
        return false;
    if (differ(q.d[0], k.d[0]) || differ(k.d[0], v.d[0]) || differ(q.d[1], k.d[1]) || differ(k.d[1], v.d[1])
        || differ(q.d[3], k.d[3]) || differ(k.d[2], v.d[2]))
    {
        logError(n + ": " + inputsText(dims, Io::kInputNames, 3)
            + "; expected q [B, H, N, D], k [B, H, M, D], v [B, H, M, E]");
        return false;
    }
    if (nbInputs > Io::kBias)
    {
        Dims const& b = dims[Io::kBias];
        int64_t const full[4] = {q.d[0], q.d[1], q.d[2], k.d[2]};
        bool ok = b.nbDims == 4;
        for (int32_t i = 0; ok && i < 4; ++i)
            ok = b.d[i] == 1 || !differ(b.d[i], full[i]);
        if (!ok)
        {
            logError(n + ": " + inputsText(dims, Io::kInputNames, Io::kNbInputs)
                + "; expected bias [B|1, H|1, N|1, M|1], each axis 1 or as in q [B, H, N, D] and k [B, H, M, D]");
            return false;
        }
    }
    return causalLengthsAgree(kName, mParams.causal, q, k)
        && headDimsWithin(kName, "D", q, v, ATTNX_RELU_SQUARED_ATTENTION_MAX_HEAD_DIM);
}

int32_t ReluSquaredAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept
{
    Dims const& q = inputDesc[Io::kQ].dims;
    Dims const& k = inputDesc[Io::kK].dims;
    Dims const& v = inputDesc[Io::kV].dims;
    bool const hasBias = configuredInputs() > Io::kBias;
    Dims const bias = hasBias ? inputDesc[Io::kBias].dims : Dims{};
    // onShapeChange checked these shapes; the entry point checks them again and never launches on bad ones
    int32_t const status = attnx_relu_squared_attention_forward(inputs[Io::kQ], inputs[Io::kK], inputs[Io::kV],
        hasBias ? inputs[Io::kBias] : nullptr, hasBias ? bias.d[0] : 1, hasBias ? bias.d[1] : 1,
        hasBias ? bias.d[2] : 1, hasBias ? bias.d[3] : 1, outputs[Io::kY], q.d[0], q.d[1], q.d[2], k.d[2], q.d[3],
        v.d[3], mParams.causal, mParams.scale, mParams.norm, mParams.fixedLength, mParams.normPlacement,
        kernelDtype(inputDesc[Io::kQ].type), static_cast<void*>(stream));
    return kernelResult(status, inputDesc, configuredInputs());
}

} // namespace attnx
