// TensorRT IPluginV3 for attnx::LinearAttention (attnx/ops/linear_attention.py). Fields are the
// spec's attributes as the ONNX parser passes them: causal int32, feature_map char, normalize int32,
// eps float32, chunk_size int32.
#pragma once

#include "NvInferRuntime.h"
#include "pluginCommon.h"

#include <string>

namespace attnx
{

constexpr char const* kLinearAttentionName = "LinearAttention";
constexpr char const* kLinearAttentionVersion = "1";
constexpr char const* kPluginNamespace = "attnx";

// The validated attribute values.
struct LinearAttentionParams
{
    int32_t causal{0};
    int32_t featureMap{0}; // attnx_feature_map
    int32_t normalize{1};
    float eps{1e-6f};
    int32_t chunkSize{64};
};

class LinearAttentionPlugin : public nvinfer1::IPluginV3,
                              public nvinfer1::IPluginV3OneCore,
                              public nvinfer1::IPluginV3OneBuild,
                              public nvinfer1::IPluginV3OneRuntime
{
public:
    LinearAttentionPlugin(FieldSet fields, LinearAttentionParams params);
    ~LinearAttentionPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return kLinearAttentionName; }
    char const* getPluginVersion() const noexcept override { return kLinearAttentionVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    // Always y, state_s_out, state_z_out: the states cost D·E floats per (b, h) and a node that
    // names only y leaves them unused (the ONNX parser accepts fewer node outputs than the plugin's).
    int32_t getNbOutputs() const noexcept override { return 3; }
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    LinearAttentionParams const& params() const { return mParams; }

private:
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    FieldSet mFields;
    LinearAttentionParams mParams;
    int32_t mNbInputs{3}; // 3, or 5 with state_s/state_z; set by configurePlugin/onShapeChange
};

class LinearAttentionPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    LinearAttentionPluginCreator();
    ~LinearAttentionPluginCreator() override = default;

    char const* getPluginName() const noexcept override { return kLinearAttentionName; }
    char const* getPluginVersion() const noexcept override { return kLinearAttentionVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
    // The spec's attributes with their defaults (data points at the default value).
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    // Validates every field; on a bad one logs an error naming it and returns nullptr.
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    FieldSet mDefaults;
};

// The defaults, as the spec (attnx.ops.REGISTRY["LinearAttention"].plugin_fields()) has them.
FieldSet linearAttentionDefaultFields();

} // namespace attnx
