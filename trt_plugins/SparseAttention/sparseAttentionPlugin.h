// TensorRT IPluginV3 for attnx::SparseAttention (attnx/ops/sparse_attention): its shapes, workspace and
// enqueue. Its I/O (positions, names, counts), name, version and fields are SparseAttentionFields, generated
// from the op's spec into the build folder (attnx_generated/sparseAttentionFields.h;
// attnx/plugins/codegen.py).
#pragma once

#include "attnx_generated/sparseAttentionFields.h"
#include "pluginBase.h"

namespace attnx
{

class SparseAttentionPlugin final : public PluginBase<SparseAttentionPlugin, SparseAttentionFields>
{
public:
    using PluginBase::PluginBase;

    bool outputShapes(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs* outputs) const noexcept;
    bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    // no workspace: the online softmax keeps its state in registers
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using SparseAttentionPluginCreator = PluginCreatorBase<SparseAttentionPlugin>;

} // namespace attnx
