// TensorRT IPluginV3 for attnx::ReluSquaredAttention (attnx/ops/relu_squared_attention): its shapes,
// workspace and enqueue. Its I/O (positions, names, counts), name, version and fields are
// ReluSquaredAttentionFields, generated from the op's spec into the build folder
// (attnx_generated/reluSquaredAttentionFields.h; attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/reluSquaredAttentionFields.h"
#include "pluginBase.h"

namespace attnx
{

class ReluSquaredAttentionPlugin final : public PluginBase<ReluSquaredAttentionPlugin, ReluSquaredAttentionFields>
{
public:
    using PluginBase::PluginBase;

    bool outputShapes(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs* outputs) const noexcept;
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    // no workspace: scores live in shared memory, the output accumulates in registers
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using ReluSquaredAttentionPluginCreator = PluginCreatorBase<ReluSquaredAttentionPlugin>;

} // namespace attnx
