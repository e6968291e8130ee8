// TensorRT IPluginV3 for attnx::PerformerFeatures (attnx/ops/performer_features.py). Fields are the
// spec's attributes as the ONNX parser passes them: kind char, eps float32, offset float32.
#pragma once

#include "pluginBase.h"

namespace attnx
{

// The validated attribute values.
struct PerformerFeaturesParams
{
    int32_t kind{0}; // attnx_performer_kind
    float eps{1e-4f};
    float offset{0.f};
};

class PerformerFeaturesPlugin final : public PluginBase<PerformerFeaturesPlugin, PerformerFeaturesParams>
{
public:
    using PluginBase::PluginBase;

    static constexpr char const* kName = "PerformerFeatures";
    static constexpr char const* kVersion = "1";
    static constexpr char const* kIo = "2 inputs (x, w) and 1 output (features)";
    static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs) { return nbInputs == 2 && nbOutputs == 1; }
    // The defaults, as the spec (attnx.ops.REGISTRY["PerformerFeatures"].plugin_fields()) has them.
    static FieldSet defaultFields();
    static bool parse(FieldSet const& fields, PerformerFeaturesParams& params);
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    int32_t getNbOutputs() const noexcept override { return 1; }
    // kind key: the per-(b, h) maxima, sized for the profile's largest shapes; 0 otherwise
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using PerformerFeaturesPluginCreator = PluginCreatorBase<PerformerFeaturesPlugin>;

} // namespace attnx
