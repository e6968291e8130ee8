#include "mixedChunkAttentionPlugin.h"

#include "mixedChunkAttentionKernel.h"

#include <string>

using namespace nvinfer1;

namespace attnx
{
namespace
{
// Input positions (spec order): quad_q, quad_k, lin_q, lin_k, v → y.
constexpr int32_t kQuadQ = 0;
constexpr int32_t kQuadK = 1;
constexpr int32_t kLinQ = 2;
constexpr int32_t kLinK = 3;
constexpr int32_t kV = 4;
constexpr int32_t kNbInputs = 5;
char const* const kInputNames[kNbInputs] = {"quad_q", "quad_k", "lin_q", "lin_k", "v"};
} // namespace

int32_t MixedChunkAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*,
    int32_t, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept
{
    if (!checkIoCount(nbInputs, nbOutputs, "getOutputShapes"))
        return -1;
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        if (inputs[i].nbDims != 4)
        {
            logError(std::string(kName) + ": input '" + kInputNames[i] + "' has rank "
                + std::to_string(inputs[i].nbDims) + "; every input must be [B, H, N, S]-shaped (rank 4)");
            return -1;
        }
    }
    attentionOutputShape(outputs[0], inputs[kQuadQ], inputs[kV]);
    return 0;
}

bool MixedChunkAttentionPlugin::checkShapes(Dims const* dims, int32_t) const noexcept
{
    std::string const n = kName;
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        if (dims[i].nbDims != 4)
        {
            logError(n + ": " + inputsText(dims, kInputNames, kNbInputs) + "; expected rank 4 each");
            return false;
        }
    }
    Dims const& q = dims[kQuadQ];
    for (int32_t i = kQuadK; i < kNbInputs; ++i)
    {
        // v shares B, H, N; the other three share all of [B, H, N, S]
        int32_t const shared = i == kV ? 3 : 4;
        for (int32_t a = 0; a < shared; ++a)
        {
            if (differ(q.d[a], dims[i].d[a]))
            {
                logError(n + ": " + inputsText(dims, kInputNames, kNbInputs)
                    + "; expected quad_q, quad_k, lin_q, lin_k [B, H, N, S] and v [B, H, N, E]");
                return false;
            }
        }
    }
    return headDimsWithin(kName, "S", q, dims[kV], ATTNX_MIXED_CHUNK_ATTENTION_MAX_HEAD_DIM);
}

size_t MixedChunkAttentionPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    if (nbInputs != kNbInputs || inputs[kQuadQ].max.nbDims != 4 || inputs[kV].max.nbDims != 4)
        return 0; // configurePlugin refuses these
    Dims const& q = inputs[kQuadQ].max;
    return attnx_mixed_chunk_attention_workspace_size(
        q.d[0], q.d[1], q.d[2], q.d[3], inputs[kV].max.d[3], mParams.causal);
}

int32_t MixedChunkAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& q = inputDesc[kQuadQ].dims;
    Dims const& v = inputDesc[kV].dims;
    // onShapeChange checked these shapes; the entry point checks them again and never launches on bad ones
    int32_t const status = attnx_mixed_chunk_attention_forward(inputs[kQuadQ], inputs[kQuadK], inputs[kLinQ],
        inputs[kLinK], inputs[kV], outputs[0], workspace, q.d[0], q.d[1], q.d[2], q.d[3], v.d[3], mParams.causal,
        mParams.chunkSize, mParams.quadScale, mParams.linScale, kernelDtype(inputDesc[kQuadQ].type),
        static_cast<void*>(stream));
    return kernelResult(status, inputDesc, kInputNames, kNbInputs);
}

} // namespace attnx
