// The IPluginV3 frame every attnx plugin shares, so that a plugin's own files hold only what is its
// own: its shapes, workspace and enqueue.
//
// PluginBase<Derived, Fields> gives the capabilities, names, clone, attachToContext and serialisation
// (the spec's fields as given), the I/O counts, output dtypes, format combinations, getOutputShapes
// as an I/O-count check followed by Derived's outputShapes, and configurePlugin/onShapeChange as that
// check followed by Derived's checkShapes. Fields is the
// op's generated attnx_generated/<op>Fields.h (attnx/plugins/codegen.py, from the op's spec):
//   using Params;                                  // <Op>Params: the attributes as the kernels take them
//   using Io;                                      // <Op>Io: the tensors' positions (Io::kQ), names, counts
//   static constexpr char const* kName, kVersion, kNamespace;
//   static FieldSet defaults();                    // the spec's attributes, in its order, with its defaults
//   static bool parse(FieldSet const&, Params&);   // the spec's limits; false after logging the first bad field
// Derived (final) provides, each logging what it refuses,
//   bool outputShapes(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs* outputs) const noexcept;
//   bool checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;
// and overrides enqueue (getWorkspaceSize when it needs one). Where the op allows
// fewer of its optional inputs than the spec's positions would, it hides acceptsInputs and
// kInputsRule (LinearAttention: both states or neither).
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
    using Io = typename Fields::Io;
    static constexpr char const* kName = Fields::kName;

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
        nvinfer1::Dims dims[Io::kNbInputs];
        for (int32_t i = 0; i < nbInputs; ++i)
            dims[i] = in[i].desc.dims;
        return shapesChanged(dims, nbInputs);
    }

    // Every output of the spec, optional ones included (Io says why).
    int32_t getNbOutputs() const noexcept override { return Io::kNbOutputs; }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const*, int32_t,
        nvinfer1::DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder&) noexcept override
    {
        if (!checkIoCount(nbInputs, nbOutputs, "getOutputShapes"))
            return -1;
        return static_cast<Derived const&>(*this).outputShapes(inputs, outputs) ? 0 : -1;
    }

    // The spec's float32 outputs (recurrent states) float32; the others the first input's type.
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkIoCount(nbInputs, nbOutputs, "getOutputDataTypes"))
            return -1;
        for (int32_t i = 0; i < nbOutputs; ++i)
            outputTypes[i] = Io::kOutputIsFloat32[i] ? nvinfer1::DataType::kFLOAT : inputTypes[0];
        return 0;
    }

    // Linear layout; the first input in an I/O type, which every other tensor shares except the
    // spec's float32 ones.
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        if (pos < 0 || pos >= nbInputs + nbOutputs || nbInputs > Io::kNbInputs || nbOutputs != Io::kNbOutputs)
            return false;
        nvinfer1::PluginTensorDesc const& d = inOut[pos].desc;
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
            return false;
        if (pos < nbInputs ? Io::kInputIsFloat32[pos] : Io::kOutputIsFloat32[pos - nbInputs])
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
        nvinfer1::Dims dims[Io::kNbInputs];
        for (int32_t i = 0; i < nbInputs; ++i)
            dims[i] = in[i].dims;
        return shapesChanged(dims, nbInputs);
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override { return clone(); }
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override { return mFields.collection(); }

    ParamsType const& params() const { return mParams; }

    // Any count of the optional inputs the spec's positions allow, unless Derived narrows it and says
    // how in kInputsRule (appended to Io::kText).
    static bool acceptsInputs(int32_t) { return true; }
    static constexpr char const* kInputsRule = "";

protected:
    // False, after logging what was given against Io::kText, when the counts are not the spec's.
    bool checkIoCount(int32_t nbInputs, int32_t nbOutputs, char const* where) const
    {
        if (nbInputs >= Io::kNbRequiredInputs && nbInputs <= Io::kNbInputs && nbOutputs == Io::kNbOutputs
            && Derived::acceptsInputs(nbInputs))
            return true;
        logError(std::string(kName) + ": " + where + " with " + std::to_string(nbInputs) + " inputs and "
            + std::to_string(nbOutputs) + " outputs; expected " + Io::kText + Derived::kInputsRule);
        return false;
    }

    // outputShapes of an attention plugin whose inputs start q, k, v: y [B, H, N, E] as output 0.
    // False after logging when the ranks are wrong.
    bool qkvOutputShape(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs* outputs) const noexcept
    {
        if (!qkvOfRank4(kName, Io::kInputNames, inputs))
            return false;
        attentionOutputShape(outputs[0], inputs[0], inputs[2]);
        return true;
    }

    // 0 for ATTNX_OK; else -1 after logging the status and the shapes of the first nbShown inputs.
    int32_t kernelResult(int32_t status, nvinfer1::PluginTensorDesc const* inputDesc, int32_t nbShown) const
    {
        if (status == ATTNX_OK)
            return 0;
        nvinfer1::Dims dims[Io::kNbInputs];
        for (int32_t i = 0; i < nbShown; ++i)
            dims[i] = inputDesc[i].dims;
        logError(std::string(kName) + ": kernel failed: " + attnx_status_string(status) + " ("
            + inputsText(dims, Io::kInputNames, nbShown) + ")");
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
