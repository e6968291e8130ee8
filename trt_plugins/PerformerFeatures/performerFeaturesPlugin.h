// TensorRT IPluginV3 for attnx::PerformerFeatures (attnx/ops/performer_features): its shapes, workspace and
// enqueue. Its I/O (positions, names, counts), name, version and fields are PerformerFeaturesFields,
// generated from the op's spec into the build folder (attnx_generated/performerFeaturesFields.h;
// attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/performerFeaturesFields.h"
#include "pluginBase.h"

namespace attnx
{

class PerformerFeaturesPlugin final : public PluginBase<PerformerFeaturesPlugin, PerformerFeaturesFields>
{
public:
    using PluginBase::PluginBase;

    bool outputShapes(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs* outputs) const noexcept;
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    // kind key: the per-(b, h) maxima, sized for the profile's largest shapes; 0 otherwise
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using PerformerFeaturesPluginCreator = PluginCreatorBase<PerformerFeaturesPlugin>;

} // namespace attnx
