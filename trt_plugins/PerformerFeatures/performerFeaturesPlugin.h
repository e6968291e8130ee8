// TensorRT IPluginV3 for attnx::PerformerFeatures (attnx/ops/performer_features): its I/O, shapes,
// workspace and enqueue. Its name, version and fields are PerformerFeaturesFields, generated from the op's
// spec into the build folder (attnx_generated/performerFeaturesFields.h; attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/performerFeaturesFields.h"
#include "pluginBase.h"

namespace attnx
{

class PerformerFeaturesPlugin final : public PluginBase<PerformerFeaturesPlugin, PerformerFeaturesFields>
{
public:
    using PluginBase::PluginBase;

    static constexpr char const* kIo = "2 inputs (x, w) and 1 output (features)";
    static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs) { return nbInputs == 2 && nbOutputs == 1; }
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
