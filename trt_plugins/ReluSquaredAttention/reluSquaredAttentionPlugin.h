// TensorRT IPluginV3 for attnx::ReluSquaredAttention (attnx/ops/relu_squared_attention): its I/O, shapes,
// workspace and enqueue. Its name, version and fields are ReluSquaredAttentionFields, generated from the
// op's spec into the build folder (attnx_generated/reluSquaredAttentionFields.h; attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/reluSquaredAttentionFields.h"
#include "pluginBase.h"

namespace attnx
{

class ReluSquaredAttentionPlugin final : public PluginBase<ReluSquaredAttentionPlugin, ReluSquaredAttentionFields>
{
public:
    using PluginBase::PluginBase;

    static constexpr char const* kIo = "3 or 4 inputs (q, k, v[, bias]) and 1 output (y)";
    static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs)
    {
        return (nbInputs == 3 || nbInputs == 4) && nbOutputs == 1;
    }
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    int32_t getNbOutputs() const noexcept override { return 1; }
    // no workspace: scores live in shared memory, the output accumulates in registers
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using ReluSquaredAttentionPluginCreator = PluginCreatorBase<ReluSquaredAttentionPlugin>;

} // namespace attnx
