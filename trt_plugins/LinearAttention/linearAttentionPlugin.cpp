#include "linearAttentionPlugin.h"

#include "linearAttentionKernel.h"

#include <cmath>
#include <exception>
#include <string>

using namespace nvinfer1;

namespace attnx
{
namespace
{
// Input and output positions (spec order): q, k, v[, state_s, state_z] → y, state_s_out, state_z_out.
constexpr int32_t kQ = 0;
constexpr int32_t kK = 1;
constexpr int32_t kV = 2;
constexpr int32_t kStateS = 3;
constexpr int32_t kStateZ = 4;

bool isIoType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

int32_t kernelDtype(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return ATTNX_DTYPE_FLOAT32;
    case DataType::kHALF: return ATTNX_DTYPE_FLOAT16;
    case DataType::kBF16: return ATTNX_DTYPE_BFLOAT16;
    default: return -1;
    }
}

std::string dimsText(Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    return s + "]";
}

// Reads and range-checks the spec's attributes; false after logging the first bad one.
bool readParams(FieldSet const& f, LinearAttentionParams& p)
{
    char const* n = kLinearAttentionName;
    p.causal = f.getInt("causal");
    if (p.causal != 0 && p.causal != 1)
    {
        logError(std::string(n) + ": field 'causal' = " + std::to_string(p.causal) + "; expected 0 or 1");
        return false;
    }
    std::string const& fm = f.getString("feature_map");
    if (fm == "elu")
        p.featureMap = ATTNX_FEATURE_ELU;
    else if (fm == "relu")
        p.featureMap = ATTNX_FEATURE_RELU;
    else if (fm == "identity")
        p.featureMap = ATTNX_FEATURE_IDENTITY;
    else
    {
        logError(std::string(n) + ": field 'feature_map' = '" + fm + "'; expected one of 'elu', 'relu', 'identity'");
        return false;
    }
    p.normalize = f.getInt("normalize");
    if (p.normalize != 0 && p.normalize != 1)
    {
        logError(std::string(n) + ": field 'normalize' = " + std::to_string(p.normalize) + "; expected 0 or 1");
        return false;
    }
    p.eps = f.getFloat("eps");
    if (!std::isfinite(p.eps) || p.eps <= 0.f || p.eps > 1.f)
    {
        logError(std::string(n) + ": field 'eps' = " + std::to_string(p.eps) + "; expected float32 > 0 and <= 1");
        return false;
    }
    p.chunkSize = f.getInt("chunk_size");
    if (p.chunkSize < 1 || p.chunkSize > 4096)
    {
        logError(std::string(n) + ": field 'chunk_size' = " + std::to_string(p.chunkSize)
            + "; expected int32 >= 1 and <= 4096");
        return false;
    }
    return true;
}
} // namespace

FieldSet linearAttentionDefaultFields()
{
    // the spec's attributes in the spec's order, with its defaults (bool → int32 0/1)
    return FieldSet({intField("causal", 0), charField("feature_map", "elu"), intField("normalize", 1),
        floatField("eps", 1e-6f), intField("chunk_size", 64)});
}

LinearAttentionPlugin::LinearAttentionPlugin(FieldSet fields, LinearAttentionParams params)
    : mFields(std::move(fields))
    , mParams(params)
{
}

IPluginCapability* LinearAttentionPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* LinearAttentionPlugin::clone() noexcept
{
    try
    {
        return new LinearAttentionPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string(kLinearAttentionName) + ": clone failed: " + e.what());
        return nullptr;
    }
}

int32_t LinearAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if ((nbInputs != 3 && nbInputs != 5) || nbOutputs != 3)
    {
        logError(std::string(kLinearAttentionName) + ": " + std::to_string(nbInputs) + " inputs and "
            + std::to_string(nbOutputs) + " outputs; expected 3 inputs (q, k, v) or 5 (with state_s, state_z) "
            "and 3 outputs");
        return -1;
    }
    outputTypes[0] = inputTypes[kQ];
    outputTypes[1] = DataType::kFLOAT;
    outputTypes[2] = DataType::kFLOAT;
    return 0;
}

int32_t LinearAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
    DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept
{
    if ((nbInputs != 3 && nbInputs != 5) || nbOutputs != 3)
    {
        logError(std::string(kLinearAttentionName) + ": getOutputShapes with " + std::to_string(nbInputs)
            + " inputs and " + std::to_string(nbOutputs) + " outputs; expected 3 or 5 inputs and 3 outputs");
        return -1;
    }
    for (int32_t i = 0; i < 3; ++i)
    {
        if (inputs[i].nbDims != 4)
        {
            logError(std::string(kLinearAttentionName) + ": input " + std::to_string(i) + " has rank "
                + std::to_string(inputs[i].nbDims) + "; q, k and v must be [B, H, N, D]-shaped (rank 4)");
            return -1;
        }
    }
    DimsExprs const& q = inputs[kQ];
    DimsExprs const& v = inputs[kV];
    outputs[0].nbDims = 4; // y [B, H, N, E]
    outputs[0].d[0] = q.d[0];
    outputs[0].d[1] = q.d[1];
    outputs[0].d[2] = q.d[2];
    outputs[0].d[3] = v.d[3];
    outputs[1].nbDims = 4; // state_s_out [B, H, D, E]
    outputs[1].d[0] = q.d[0];
    outputs[1].d[1] = q.d[1];
    outputs[1].d[2] = q.d[3];
    outputs[1].d[3] = v.d[3];
    outputs[2].nbDims = 3; // state_z_out [B, H, D]
    outputs[2].d[0] = q.d[0];
    outputs[2].d[1] = q.d[1];
    outputs[2].d[2] = q.d[3];
    return 0;
}

bool LinearAttentionPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (pos < 0 || pos >= nbInputs + nbOutputs)
        return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR)
        return false;
    bool const isState = (pos >= kStateS && pos < nbInputs) || pos > nbInputs;
    if (isState)
        return d.type == DataType::kFLOAT;
    if (pos == kQ)
        return isIoType(d.type);
    return d.type == inOut[kQ].desc.type; // k, v and y share q's dtype
}

bool LinearAttentionPlugin::checkShapes(Dims const* dims, int32_t nbInputs) const noexcept
{
    // -1 marks a dynamic size during the build; only known sizes are checked there
    auto known = [](int64_t x) { return x >= 0; };
    Dims const& q = dims[kQ];
    Dims const& k = dims[kK];
    Dims const& v = dims[kV];
    std::string const n = kLinearAttentionName;
    if (q.nbDims != 4 || k.nbDims != 4 || v.nbDims != 4)
    {
        logError(n + ": q " + dimsText(q) + ", k " + dimsText(k) + ", v " + dimsText(v) + "; expected rank 4 each");
        return false;
    }
    for (int32_t i = 0; i < 2; ++i)
    {
        if ((known(q.d[i]) && known(k.d[i]) && q.d[i] != k.d[i]) || (known(k.d[i]) && known(v.d[i]) && k.d[i] != v.d[i]))
        {
            logError(n + ": batch/head sizes differ: q " + dimsText(q) + ", k " + dimsText(k) + ", v " + dimsText(v));
            return false;
        }
    }
    if ((known(q.d[3]) && known(k.d[3]) && q.d[3] != k.d[3]) || (known(k.d[2]) && known(v.d[2]) && k.d[2] != v.d[2]))
    {
        logError(n + ": q " + dimsText(q) + ", k " + dimsText(k) + ", v " + dimsText(v)
            + "; expected q [B, H, N, D], k [B, H, M, D], v [B, H, M, E]");
        return false;
    }
    if (mParams.causal && known(q.d[2]) && known(k.d[2]) && q.d[2] != k.d[2])
    {
        logError(n + ": causal with N = " + std::to_string(q.d[2]) + " queries and M = " + std::to_string(k.d[2])
            + " keys; causal requires M = N");
        return false;
    }
    if ((known(q.d[3]) && q.d[3] > ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM)
        || (known(v.d[3]) && v.d[3] > ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM))
    {
        logError(n + ": head dims D = " + std::to_string(q.d[3]) + ", E = " + std::to_string(v.d[3])
            + "; this plugin supports up to " + std::to_string(ATTNX_LINEAR_ATTENTION_MAX_HEAD_DIM));
        return false;
    }
    if (nbInputs == 5)
    {
        Dims const& s = dims[kStateS];
        Dims const& z = dims[kStateZ];
        if (s.nbDims != 4 || z.nbDims != 3)
        {
            logError(n + ": state_s " + dimsText(s) + ", state_z " + dimsText(z) + "; expected [B, H, D, E] and [B, H, D]");
            return false;
        }
    }
    return true;
}

int32_t LinearAttentionPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept
{
    if ((nbInputs != 3 && nbInputs != 5) || nbOutputs != 3)
        return -1;
    Dims dims[5];
    for (int32_t i = 0; i < nbInputs; ++i)
        dims[i] = in[i].desc.dims;
    mNbInputs = nbInputs;
    return checkShapes(dims, nbInputs) ? 0 : -1;
}

size_t LinearAttentionPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    return 0; // S and z go straight into state_s_out/state_z_out, which always exist
}

int32_t LinearAttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t nbOutputs) noexcept
{
    if ((nbInputs != 3 && nbInputs != 5) || nbOutputs != 3)
        return -1;
    Dims dims[5];
    for (int32_t i = 0; i < nbInputs; ++i)
        dims[i] = in[i].dims;
    mNbInputs = nbInputs;
    return checkShapes(dims, nbInputs) ? 0 : -1;
}

int32_t LinearAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& q = inputDesc[kQ].dims;
    Dims const& k = inputDesc[kK].dims;
    Dims const& v = inputDesc[kV].dims;
    // onShapeChange, called before enqueue whenever shapes change, recorded the input count
    bool const hasState = mNbInputs == 5;
    int32_t const status = attnx_linear_attention_forward(inputs[kQ], inputs[kK], inputs[kV],
        hasState ? static_cast<float const*>(inputs[kStateS]) : nullptr,
        hasState ? static_cast<float const*>(inputs[kStateZ]) : nullptr, outputs[0], static_cast<float*>(outputs[1]),
        static_cast<float*>(outputs[2]), workspace, q.d[0], q.d[1], q.d[2], k.d[2], q.d[3], v.d[3], mParams.causal,
        mParams.featureMap, mParams.normalize, mParams.eps, mParams.chunkSize, kernelDtype(inputDesc[kQ].type),
        static_cast<void*>(stream));
    (void) outputDesc;
    if (status != ATTNX_OK)
    {
        logError(std::string(kLinearAttentionName) + ": kernel failed: " + attnx_status_string(status) + " (q "
            + dimsText(q) + ", k " + dimsText(k) + ", v " + dimsText(v) + ")");
        return -1;
    }
    return 0;
}

IPluginV3* LinearAttentionPlugin::attachToContext(IPluginResourceContext*) noexcept
{
    return clone();
}

PluginFieldCollection const* LinearAttentionPlugin::getFieldsToSerialize() noexcept
{
    return mFields.collection();
}

LinearAttentionPluginCreator::LinearAttentionPluginCreator()
    : mDefaults(linearAttentionDefaultFields())
{
}

PluginFieldCollection const* LinearAttentionPluginCreator::getFieldNames() noexcept
{
    return mDefaults.collection();
}

IPluginV3* LinearAttentionPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
{
    (void) name;
    (void) phase; // the same fields describe the plugin at build and at runtime
    try
    {
        FieldSet fields = linearAttentionDefaultFields();
        if (!fields.parse(kLinearAttentionName, fc))
            return nullptr;
        LinearAttentionParams params;
        if (!readParams(fields, params))
            return nullptr;
        return new LinearAttentionPlugin(std::move(fields), params);
    }
    catch (std::exception const& e)
    {
        logError(std::string(kLinearAttentionName) + ": createPlugin failed: " + e.what());
        return nullptr;
    }
}

} // namespace attnx
