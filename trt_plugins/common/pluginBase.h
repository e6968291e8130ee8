// The IPluginV3 frame every attnx plugin shares, so that a plugin's own files hold only what is its
// own: its I/O, shapes, workspace and enqueue.
//
// PluginBase<Derived, Fields> gives the capabilities, names, clone, attachToContext and serialisation
// (the spec's fields as given), output dtypes, format combinations, and configurePlugin/onShapeChange
// as an input-count check followed by Derived's shape check. Fields is the op's generated
// attnx_generated/<op>Fields.h (attnx/plugins/codegen.py, from the op's spec):
//   using Params;                                  // <Op>Params: the attributes as the kernels take them
//   static constexpr char const* kName, kVersion, kNamespace;
//   static FieldSet defaults();                    // the spec's attributes, in its order, with its defaults
//   static bool parse(FieldSet const&, Params&);   // the spec's limits; false after logging the first bad field
// Derived (final) provides:
//   static constexpr char const* kIo;             // what it takes, e.g. "3 inputs (q, k, v) and 1 output (y)"
//   static bool acceptsIo(int32_t nbInputs, int32_t nbOutputs);   // at most kMaxInputs inputs
//   bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;
// and overrides getOutputShapes, getNbOutputs and enqueue (getWorkspaceSize when it needs one). It may
// hide isFloat32Position to make some tensors float32 whatever the I/O type (recurrent states).
//
// PluginCreatorBase<Plugin> is the creator: the same names, the defaults as getFieldNames, and
// createPlugin = parse the fields, validate them, construct.
#pragma once

#include "NvInferRuntime.h"
#include "attnxKernelApi.h"
#include "pluginCommon.h"

#include <exception>
#include <string>
#include <utility>

namespace attnx
{

template <typename Derived, typename Fields>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    using FieldsType = Fields;
    using ParamsType = typename Fields::Params;
    static constexpr char const* kName = Fields::kName;
    static constexpr int32_t kMaxInputs = 8;

    PluginBase(FieldSet fields, ParamsType params)
        : mFields(std::move(fields))
        , mParams(params)
    {
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new Derived(static_cast<Derived const&>(*this));
        }
        catch (std::exception const& e)
        {
            logError(std::string(kName) + ": clone failed: " + e.what());
            return nullptr;
        }
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return Fields::kName; }
    char const* getPluginVersion() const noexcept override { return Fields::kVersion; }
    char const* getPluginNamespace() const noexcept override { return Fields::kNamespace; }

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept override
    {
        if (!checkIoCount(nbInputs, nbOutputs, "configurePlugin"))
            return -1;
        nvinfer1::Dims dims[kMaxInputs];
        for (int32_t i = 0; i < nbInputs; ++i)
            dims[i] = in[i].desc.dims;
        return shapesChanged(dims, nbInputs);
    }

    // The first output takes the first input's type; any further output (a recurrent state) is float32.
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkIoCount(nbInputs, nbOutputs, "getOutputDataTypes"))
            return -1;
        outputTypes[0] = inputTypes[0];
        for (int32_t i = 1; i < nbOutputs; ++i)
            outputTypes[i] = nvinfer1::DataType::kFLOAT;
        return 0;
    }

    // Linear layout; the first input in an I/O type, which every other tensor shares except those
    // Derived::isFloat32Position names.
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        if (pos < 0 || pos >= nbInputs + nbOutputs)
            return false;
        nvinfer1::PluginTensorDesc const& d = inOut[pos].desc;
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
            return false;
        if (Derived::isFloat32Position(pos, nbInputs))
            return d.type == nvinfer1::DataType::kFLOAT;
        if (pos == 0)
            return isIoType(d.type);
        return d.type == inOut[0].desc.type;
    }

    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const*, int32_t, nvinfer1::DynamicPluginTensorDesc const*,
        int32_t) const noexcept override
    {
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const*,
        int32_t nbOutputs) noexcept override
    {
        if (!checkIoCount(nbInputs, nbOutputs, "onShapeChange"))
            return -1;
        nvinfer1::Dims dims[kMaxInputs];
        for (int32_t i = 0; i < nbInputs; ++i)
            dims[i] = in[i].dims;
        return shapesChanged(dims, nbInputs);
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override { return clone(); }
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override { return mFields.collection(); }

    ParamsType const& params() const { return mParams; }

    // No tensor is float32 whatever the I/O type unless Derived says so.
    static bool isFloat32Position(int32_t, int32_t) { return false; }

protected:
    // False, after logging what was given against Derived::kIo, when Derived does not accept the counts.
    bool checkIoCount(int32_t nbInputs, int32_t nbOutputs, char const* where) const
    {
        if (nbInputs <= kMaxInputs && Derived::acceptsIo(nbInputs, nbOutputs))
            return true;
        logError(std::string(kName) + ": " + where + " with " + std::to_string(nbInputs) + " inputs and "
            + std::to_string(nbOutputs) + " outputs; expected " + Derived::kIo);
        return false;
    }

    // getOutputShapes of an attention plugin whose inputs start q, k, v: y [B, H, N, E] as output 0.
    // -1 after logging when the counts or the ranks are wrong.
    int32_t qkvOutputShape(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs) const
    {
        if (!checkIoCount(nbInputs, nbOutputs, "getOutputShapes") || !qkvOfRank4(kName, inputs))
            return -1;
        attentionOutputShape(outputs[0], inputs[0], inputs[2]);
        return 0;
    }

    // 0 for ATTNX_OK; else -1 after logging the status and the shapes of the first nbShown inputs.
    int32_t kernelResult(int32_t status, nvinfer1::PluginTensorDesc const* inputDesc, char const* const* inputNames,
        int32_t nbShown) const
    {
        if (status == ATTNX_OK)
            return 0;
        nvinfer1::Dims dims[kMaxInputs];
        for (int32_t i = 0; i < nbShown; ++i)
            dims[i] = inputDesc[i].dims;
        logError(std::string(kName) + ": kernel failed: " + attnx_status_string(status) + " ("
            + inputsText(dims, inputNames, nbShown) + ")");
        return -1;
    }

    // The input count of the last configurePlugin/onShapeChange (onShapeChange precedes every enqueue
    // after a change of shapes).
    int32_t configuredInputs() const { return mNbInputs; }

    FieldSet mFields;
    ParamsType mParams;

private:
    int32_t shapesChanged(nvinfer1::Dims const* dims, int32_t nbInputs) noexcept
    {
        mNbInputs = nbInputs;
        return static_cast<Derived const&>(*this).checkShapes(dims, nbInputs) ? 0 : -1;
    }

    int32_t mNbInputs{0};
};

template <typename Plugin>
class PluginCreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    using Fields = typename Plugin::FieldsType;

    PluginCreatorBase()
        : mDefaults(Fields::defaults())
    {
    }

    char const* getPluginName() const noexcept override { return Fields::kName; }
    char const* getPluginVersion() const noexcept override { return Fields::kVersion; }
    char const* getPluginNamespace() const noexcept override { return Fields::kNamespace; }

    // The spec's attributes with their defaults (data points at the default value).
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return mDefaults.collection(); }

    // Validates every field; on a bad one logs an error naming it and returns nullptr. The same fields
    // describe the plugin at build and at runtime, so the phase does not matter.
    nvinfer1::IPluginV3* createPlugin(
        char const*, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase) noexcept override
    {
        try
        {
            FieldSet fields = Fields::defaults();
            if (!fields.parse(Fields::kName, fc))
                return nullptr;
            typename Fields::Params params;
            if (!Fields::parse(fields, params))
                return nullptr;
            return new Plugin(std::move(fields), params);
        }
        catch (std::exception const& e)
        {
            logError(std::string(Fields::kName) + ": createPlugin failed: " + e.what());
            return nullptr;
        }
    }

private:
    FieldSet mDefaults;
};

} // namespace attnx
