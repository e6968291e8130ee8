// TensorRT IPluginV3 for attnx::LinearAttention (attnx/ops/linear_attention.py). Fields are the
// spec's attributes as the ONNX parser passes them: causal int32, feature_map char, normalize int32,
// eps float32, chunk_size int32.
#pragma once

#include "pluginBase.h"

namespace attnx
{

// The validated attribute values.
struct LinearAttentionParams
{
    int32_t causal{0};
    int32_t featureMap{0}; // attnx_feature_map
    int32_t normalize{1};
    float eps{1e-6f};
    int32_t chunkSize{64};
};

class LinearAttentionPlugin final : public PluginBase<LinearAttentionPlugin, LinearAttentionParams>
{
public:
    using PluginBase::PluginBase;

    static constexpr char const* kName = "LinearAttention";
    static constexpr char const* kVersion = "1";
    static constexpr char const* kIo
        = "3 inputs (q, k, v) or 5 (with state_s, state_z) and 3 outputs (y, state_s_out, state_z_out)";
    static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs)
    {
        return (nbInputs == 3 || nbInputs == 5) && nbOutputs == 3;
    }
    // The defaults, as the spec (attnx.ops.REGISTRY["LinearAttention"].plugin_fields()) has them.
    static FieldSet defaultFields();
    static bool parse(FieldSet const& fields, LinearAttentionParams& params);
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
