// TensorRT IPluginV3 for attnx::SparseAttention (attnx/ops/sparse_attention): its I/O, shapes, workspace
// and enqueue. Its name, version and fields are SparseAttentionFields, generated from the op's spec into
// the build folder (attnx_generated/sparseAttentionFields.h; attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/sparseAttentionFields.h"
#include "pluginBase.h"

namespace attnx
{

class SparseAttentionPlugin final : public PluginBase<SparseAttentionPlugin, SparseAttentionFields>
{
public:
    using PluginBase::PluginBase;

    static constexpr char const* kIo = "3 inputs (q, k, v) and 1 output (y)";
    static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs) { return nbInputs == 3 && nbOutputs == 1; }
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
