// Helpers shared by the attnx plugins: logging through TensorRT's logger (with the last error kept
// for host-side checks), typed plugin fields (parse, check, serialise) and CUDA error text.
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>
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

// An ordered set of fields: the spec's attributes. Parsing checks names, types and lengths;
// value ranges are each plugin's to check.
class FieldSet
{
public:
    explicit FieldSet(std::vector<Field> defaults);

    // Overwrites values from `fc`. False (and logError naming plugin and field) when a name is
    // unknown, a type differs from the field's, or the data is missing or of the wrong length.
    bool parse(char const* plugin, nvinfer1::PluginFieldCollection const* fc) noexcept;

    Field const& get(char const* name) const;
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

} // namespace attnx
