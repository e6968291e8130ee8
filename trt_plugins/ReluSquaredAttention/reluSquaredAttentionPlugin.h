// TensorRT IPluginV3 for attnx::ReluSquaredAttention (attnx/ops/relu_squared_attention.py). Fields are
// the spec's attributes as the ONNX parser passes them: causal int32, scale float32, norm char,
// fixed_length int32, norm_placement char.
#pragma once

#include "pluginBase.h"

namespace attnx
{

// The validated attribute values.
struct ReluSquaredAttentionParams
{
    int32_t causal{0};
    float scale{0.f};            // 0: 1/sqrt(D)
    int32_t norm{0};             // attnx_length_norm
    int32_t fixedLength{512};
    int32_t normPlacement{0};    // attnx_norm_placement
};

class ReluSquaredAttentionPlugin final : public PluginBase<ReluSquaredAttentionPlugin, ReluSquaredAttentionParams>
{
public:
    using PluginBase::PluginBase;

    static constexpr char const* kName = "ReluSquaredAttention";
    static constexpr char const* kVersion = "1";
    static constexpr char const* kIo = "3 or 4 inputs (q, k, v[, bias]) and 1 output (y)";
    static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs)
    {
        return (nbInputs == 3 || nbInputs == 4) && nbOutputs == 1;
    }
    // The defaults, as the spec (attnx.ops.REGISTRY["ReluSquaredAttention"].plugin_fields()) has them.
    static FieldSet defaultFields();
    static bool parse(FieldSet const& fields, ReluSquaredAttentionParams& params);
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
