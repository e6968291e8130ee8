// Helpers shared by the attnx plugins: logging through TensorRT's logger (with the last error kept
// for host-side checks), typed plugin fields (parse, range-check, serialise), and the dtype, shape
// and text helpers every plugin's checks use.
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace attnx
{

// Set by setLoggerFinder (trtexec, the registry's loadLibrary); null until then.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

// Logs at kERROR through TensorRT's logger when one is known, else to stderr, and keeps the text
// as this thread's last error so host entry points (attnx_roundtrip) can return it.
void logError(std::string const& msg) noexcept;
std::string const& lastError() noexcept;
void clearLastError() noexcept;

char const* fieldTypeName(nvinfer1::PluginFieldType type) noexcept;

// One typed plugin field with its default; the value lives here so that PluginFields handed to
// TensorRT (getFieldNames, getFieldsToSerialize) point at storage that outlives the call.
struct Field
{
    std::string name;
    nvinfer1::PluginFieldType type; // kINT32, kFLOAT32 or kCHAR
    int32_t i{0};
    float f{0.f};
    std::string s;
};

inline Field intField(char const* name, int32_t value)
{
    Field f{name, nvinfer1::PluginFieldType::kINT32, value, 0.f, {}};
    return f;
}
inline Field floatField(char const* name, float value)
{
    Field f{name, nvinfer1::PluginFieldType::kFLOAT32, 0, value, {}};
    return f;
}
inline Field charField(char const* name, char const* value)
{
    Field f{name, nvinfer1::PluginFieldType::kCHAR, 0, 0.f, value};
    return f;
}

// An ordered set of fields: the spec's attributes. Parsing checks names, types and lengths; the
// values are the generated <Op>Fields::parse's to check.
class FieldSet
{
public:
    explicit FieldSet(std::vector<Field> defaults);

    // Overwrites values from `fc`. False (and logError naming plugin and field) when a name is
    // unknown, a type differs from the field's, or the data is missing or of the wrong length.
    bool parse(char const* plugin, nvinfer1::PluginFieldCollection const* fc) noexcept;

    Field const& get(char const* name) const;
    // The field at `index` of the spec's order.
    Field const& at(int32_t index) const { return mFields.at(static_cast<size_t>(index)); }
    int32_t getInt(char const* name) const { return get(name).i; }
    float getFloat(char const* name) const { return get(name).f; }
    std::string const& getString(char const* name) const { return get(name).s; }

    // A collection pointing into this FieldSet; valid until the FieldSet changes or dies.
    nvinfer1::PluginFieldCollection const* collection() noexcept;

private:
    std::vector<Field> mFields;
    std::vector<nvinfer1::PluginField> mPluginFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

// The index of `value` among `choices`, -1 when it is none of them (a generated parse stores it, and the
// generated check refuses -1).
int32_t choiceIndex(std::string const& value, std::initializer_list<char const*> choices) noexcept;

// True when `firstInvalid` < 0; else logs "<plugin>: field '<name>' = <value>; expected <expected>" for the
// field at that position of `f` (the spec's order) and returns false. The generated <Op>Fields::parse
// passes its Params' firstInvalid() and the spec's words for each field.
bool fieldsAccepted(char const* plugin, FieldSet const& f, int32_t firstInvalid, char const* const* expected);

// float32, float16 or bfloat16: the I/O types every attnx kernel takes.
bool isIoType(nvinfer1::DataType t) noexcept;
// The attnx_dtype of an I/O type; -1 for any other (the entry points refuse it).
int32_t kernelDtype(nvinfer1::DataType t) noexcept;

// "[2, 4, 128, 64]"
std::string dimsText(nvinfer1::Dims const& d);
// "q [2, 4, 128, 64], k [...], ..." for the first n inputs.
std::string inputsText(nvinfer1::Dims const* dims, char const* const* names, int32_t n);
// %g rather than std::to_string's %f, which prints 1e-9 as 0.000000
std::string floatText(float x);

// -1 marks a dynamic size during the build; only known sizes are checked there.
inline bool known(int64_t size)
{
    return size >= 0;
}
inline bool differ(int64_t a, int64_t b)
{
    return known(a) && known(b) && a != b;
}

// Shape checks shared by the attention plugins; each logs what it found and returns false.
// q, k, v (inputs 0, 1, 2, named names[0..2]) of rank 4: at build time (getOutputShapes), and at
// configure or run time.
bool qkvOfRank4(char const* plugin, char const* const* names, nvinfer1::DimsExprs const* inputs);
bool qkvOfRank4(char const* plugin, char const* const* names, nvinfer1::Dims const* dims);
// Under causal, as many keys (k.d[2]) as queries (q.d[2]).
bool causalLengthsAgree(char const* plugin, int32_t causal, nvinfer1::Dims const& q, nvinfer1::Dims const& k);
// The head dims q.d[3] (named qDimName) and v.d[3] (E) within maxDim.
bool headDimsWithin(char const* plugin, char const* qDimName, nvinfer1::Dims const& q, nvinfer1::Dims const& v,
    int64_t maxDim);

// y [B, H, N, E] from q [B, H, N, D] and v [B, H, M, E].
void attentionOutputShape(nvinfer1::DimsExprs& y, nvinfer1::DimsExprs const& q, nvinfer1::DimsExprs const& v);

} // namespace attnx
