// TensorRT IPluginV3 for attnx::MixedChunkAttention (attnx/ops/mixed_chunk_attention): its shapes, workspace
// and enqueue. Its I/O (positions, names, counts), name, version and fields are MixedChunkAttentionFields,
// generated from the op's spec into the build folder (attnx_generated/mixedChunkAttentionFields.h;
// attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/mixedChunkAttentionFields.h"
#include "pluginBase.h"

namespace attnx
{

class MixedChunkAttentionPlugin final : public PluginBase<MixedChunkAttentionPlugin, MixedChunkAttentionFields>
{
public:
    using PluginBase::PluginBase;

    bool outputShapes(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs* outputs) const noexcept;
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    // the float32 linear part, and the state when not causal, sized for the profile's largest shapes
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using MixedChunkAttentionPluginCreator = PluginCreatorBase<MixedChunkAttentionPlugin>;

} // namespace attnx
