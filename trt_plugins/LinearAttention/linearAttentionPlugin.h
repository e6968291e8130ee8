// TensorRT IPluginV3 for attnx::LinearAttention (attnx/ops/linear_attention): its shapes, workspace and
// enqueue. Its I/O (positions, names, counts), name, version and fields are LinearAttentionFields, generated
// from the op's spec into the build folder (attnx_generated/linearAttentionFields.h;
// attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/linearAttentionFields.h"
#include "pluginBase.h"

namespace attnx
{

class LinearAttentionPlugin final : public PluginBase<LinearAttentionPlugin, LinearAttentionFields>
{
public:
    using PluginBase::PluginBase;

    // state_s and state_z come together or not at all
    static bool acceptsInputs(int32_t nbInputs) { return (nbInputs > Io::kStateS) == (nbInputs > Io::kStateZ); }
    static constexpr char const* kInputsRule = ", the two states both or neither";
    bool outputShapes(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs* outputs) const noexcept;
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using LinearAttentionPluginCreator = PluginCreatorBase<LinearAttentionPlugin>;

} // namespace attnx
