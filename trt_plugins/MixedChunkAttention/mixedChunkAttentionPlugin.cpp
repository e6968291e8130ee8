#include "mixedChunkAttentionPlugin.h"

#include "mixedChunkAttentionKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
bool MixedChunkAttentionPlugin::outputShapes(DimsExprs const* inputs, DimsExprs* outputs) const noexcept
{
    // the optional bias is checked with the real shapes (checkShapes): it does not shape the output
    for (int32_t i = 0; i < Io::kNbRequiredInputs; ++i)
    {
        if (inputs[i].nbDims != 4)
        {
            logError(std::string(kName) + ": input '" + Io::kInputNames[i] + "' has rank "
                + std::to_string(inputs[i].nbDims) + "; every input must be [B, H, N, S]-shaped (rank 4)");
            return false;
        }
    }
    attentionOutputShape(outputs[Io::kY], inputs[Io::kQuadQ], inputs[Io::kV]);
    return true;
}

bool MixedChunkAttentionPlugin::checkShapes(Dims const* dims, int32_t nbInputs) const noexcept
{
    std::string const n = kName;
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        if (dims[i].nbDims != 4)
        {
            logError(n + ": " + inputsText(dims, Io::kInputNames, nbInputs) + "; expected rank 4 each");
            return false;
        }
    }
    Dims const& q = dims[Io::kQuadQ];
    for (int32_t i = Io::kQuadK; i < Io::kNbRequiredInputs; ++i)
    {
        // v shares B, H, N; the other three share all of [B, H, N, S]
        int32_t const shared = i == Io::kV ? 3 : 4;
        for (int32_t a = 0; a < shared; ++a)
        {
            if (differ(q.d[a], dims[i].d[a]))
            {
                logError(n + ": " + inputsText(dims, Io::kInputNames, nbInputs)
                    + "; expected quad_q, quad_k, lin_q, lin_k [B, H, N, S] and v [B, H, N, E]");
                return false;
            }
        }
    }
    if (nbInputs > Io::kBias)
    {
        Dims const& b = dims[Io::kBias];
        int64_t const g = mParams.chunkSize;
        int64_t const full[4] = {q.d[0], q.d[1], g, g};
        bool ok = true;
        for (int32_t a = 0; ok && a < 4; ++a)
            ok = b.d[a] == 1 || !differ(b.d[a], full[a]);
        if (!ok)
        {
            logError(n + ": " + inputsText(dims, Io::kInputNames, nbInputs) + "; expected bias [B|1, H|1, g|1, g|1], "
                + "each axis 1 or as in quad_q [B, H, N, S] and chunk_size g = " + std::to_string(g));
            return false;
        }
    }
    return headDimsWithin(kName, "S", q, dims[Io::kV], ATTNX_MIXED_CHUNK_ATTENTION_MAX_HEAD_DIM);
}

size_t MixedChunkAttentionPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    if (nbInputs < Io::kNbRequiredInputs || inputs[Io::kQuadQ].max.nbDims != 4 || inputs[Io::kV].max.nbDims != 4)
        return 0; // configurePlugin refuses these
    Dims const& q = inputs[Io::kQuadQ].max;
    return attnx_mixed_chunk_attention_workspace_size(
        q.d[0], q.d[1], q.d[2], q.d[3], inputs[Io::kV].max.d[3], mParams.causal);
}

int32_t MixedChunkAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& q = inputDesc[Io::kQuadQ].dims;
    Dims const& v = inputDesc[Io::kV].dims;
    bool const hasBias = configuredInputs() > Io::kBias;
    Dims const bias = hasBias ? inputDesc[Io::kBias].dims : Dims{};
    // onShapeChange checked these shapes; the entry point checks them again and never launches on bad ones
    int32_t const status = attnx_mixed_chunk_attention_forward(inputs[Io::kQuadQ], inputs[Io::kQuadK],
        inputs[Io::kLinQ], inputs[Io::kLinK], inputs[Io::kV], hasBias ? inputs[Io::kBias] : nullptr,
        hasBias ? bias.d[0] : 1, hasBias ? bias.d[1] : 1, hasBias ? bias.d[2] : 1, hasBias ? bias.d[3] : 1,
        outputs[Io::kY], workspace, q.d[0], q.d[1], q.d[2], q.d[3], v.d[3], mParams.causal, mParams.chunkSize,
        mParams.quadScale, mParams.linScale, kernelDtype(inputDesc[Io::kQuadQ].type), static_cast<void*>(stream));
    return kernelResult(status, inputDesc, configuredInputs());
}

} // namespace attnx
