// TensorRT IPluginV3 for attnx::SparseAttention (attnx/ops/sparse_attention.py). Fields are the spec's
// attributes as the ONNX parser passes them: pattern char, window, dilation, stride, block and causal
// int32, scale float32.
#pragma once

#include "pluginBase.h"

namespace attnx
{

// The validated attribute values.
struct SparseAttentionParams
{
    int32_t pattern{0}; // attnx_sparse_pattern
    int32_t window{16};
    int32_t dilation{2};
    int32_t stride{16};
    int32_t block{64};
    int32_t causal{0};
    float scale{0.f}; // 0: 1/sqrt(D)
};

class SparseAttentionPlugin final : public PluginBase<SparseAttentionPlugin, SparseAttentionParams>
{
public:
    using PluginBase::PluginBase;

    static constexpr char const* kName = "SparseAttention";
    static constexpr char const* kVersion = "1";
    static constexpr char const* kIo = "3 inputs (q, k, v) and 1 output (y)";
    static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs) { return nbInputs == 3 && nbOutputs == 1; }
    // The defaults, as the spec (attnx.ops.REGISTRY["SparseAttention"].plugin_fields()) has them.
    static FieldSet defaultFields();
    static bool parse(FieldSet const& fields, SparseAttentionParams& params);
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    int32_t getNbOutputs() const noexcept override { return 1; }
    // no workspace: the online softmax keeps its state in registers
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using SparseAttentionPluginCreator = PluginCreatorBase<SparseAttentionPlugin>;

} // namespace attnx
