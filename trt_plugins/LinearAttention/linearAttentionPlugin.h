// TensorRT IPluginV3 for attnx::LinearAttention (attnx/ops/linear_attention): its I/O, shapes, workspace
// and enqueue. Its name, version and fields are LinearAttentionFields, generated from the op's spec into
// the build folder (attnx_generated/linearAttentionFields.h; attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/linearAttentionFields.h"
#include "pluginBase.h"

namespace attnx
{

class LinearAttentionPlugin final : public PluginBase<LinearAttentionPlugin, LinearAttentionFields>
{
public:
    using PluginBase::PluginBase;

    static constexpr char const* kIo
        = "3 inputs (q, k, v) or 5 (with state_s, state_z) and 3 outputs (y, state_s_out, state_z_out)";
    static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs)
    {
        return (nbInputs == 3 || nbInputs == 5) && nbOutputs == 3;
    }
    // state_s, state_z and both state outputs
    static bool isFloat32Position(int32_t pos, int32_t nbInputs);
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    // Always y, state_s_out, state_z_out: the states cost D·E floats per (b, h). TensorRT's ONNX
    // parser wants all three named on the node; --target trt names them and leaves unused ones.
    int32_t getNbOutputs() const noexcept override { return 3; }
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using LinearAttentionPluginCreator = PluginCreatorBase<LinearAttentionPlugin>;

} // namespace attnx
