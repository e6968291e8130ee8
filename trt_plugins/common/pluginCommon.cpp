#include "pluginCommon.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace attnx
{
namespace
{
std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;
thread_local std::string tLastError;
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    gLoggerFinder = finder;
}

void logError(std::string const& msg) noexcept
{
    try
    {
        tLastError = msg;
        nvinfer1::ILogger* logger = nullptr;
        {
            std::lock_guard<std::mutex> lock(gLoggerMutex);
            if (gLoggerFinder)
                logger = gLoggerFinder->findLogger();
        }
        if (logger)
            logger->log(nvinfer1::ILogger::Severity::kERROR, msg.c_str());
        else
            std::fprintf(stderr, "[attnx plugins] ERROR: %s\n", msg.c_str());
    }
    catch (...)
    {
        // logging must never take the process down; the message is lost
    }
}

std::string const& lastError() noexcept
{
    return tLastError;
}

void clearLastError() noexcept
{
    tLastError.clear();
}

char const* fieldTypeName(nvinfer1::PluginFieldType type) noexcept
{
    using T = nvinfer1::PluginFieldType;
    switch (type)
    {
    case T::kFLOAT16: return "float16";
    case T::kFLOAT32: return "float32";
    case T::kFLOAT64: return "float64";
    case T::kINT8: return "int8";
    case T::kINT16: return "int16";
    case T::kINT32: return "int32";
    case T::kCHAR: return "char";
    case T::kDIMS: return "dims";
    case T::kBF16: return "bfloat16";
    case T::kINT64: return "int64";
    default: return "unknown";
    }
}

FieldSet::FieldSet(std::vector<Field> defaults)
    : mFields(std::move(defaults))
{
}

Field const& FieldSet::get(char const* name) const
{
    for (auto const& f : mFields)
        if (f.name == name)
            return f;
    // only reachable through a typo in plugin code: every name used is one of the spec's fields
    std::fprintf(stderr, "[attnx plugins] internal error: no field '%s'\n", name);
    std::abort();
}

bool FieldSet::parse(char const* plugin, nvinfer1::PluginFieldCollection const* fc) noexcept
{
    if (!fc)
        return true; // no fields given: every default stands
    if (fc->nbFields < 0 || (fc->nbFields > 0 && !fc->fields))
    {
        logError(std::string(plugin) + ": malformed PluginFieldCollection (nbFields=" + std::to_string(fc->nbFields)
            + ", fields=" + (fc->fields ? "set" : "null") + ")");
        return false;
    }
    try
    {
        for (int32_t n = 0; n < fc->nbFields; ++n)
        {
            nvinfer1::PluginField const& pf = fc->fields[n];
            std::string const name = pf.name ? pf.name : "";
            Field* field = nullptr;
            for (auto& f : mFields)
                if (f.name == name)
                    field = &f;
            if (!field)
            {
                std::string known;
                for (auto const& f : mFields)
                    known += (known.empty() ? "" : ", ") + f.name;
                logError(std::string(plugin) + ": unknown field '" + name + "'; its fields are " + known);
                return false;
            }
            if (pf.type != field->type)
            {
                logError(std::string(plugin) + ": field '" + name + "' has type " + fieldTypeName(pf.type)
                    + "; expected " + fieldTypeName(field->type));
                return false;
            }
            if (!pf.data || (field->type != nvinfer1::PluginFieldType::kCHAR && pf.length != 1))
            {
                logError(std::string(plugin) + ": field '" + name + "' holds " + std::to_string(pf.length)
                    + " values" + (pf.data ? "" : " (data is null)") + "; expected one "
                    + fieldTypeName(field->type));
                return false;
            }
            switch (field->type)
            {
            case nvinfer1::PluginFieldType::kINT32: field->i = *static_cast<int32_t const*>(pf.data); break;
            case nvinfer1::PluginFieldType::kFLOAT32: field->f = *static_cast<float const*>(pf.data); break;
            default:
            {
                // the ONNX parser passes the string's bytes without a terminator; serialised
                // fields carry one: accept both
                char const* p = static_cast<char const*>(pf.data);
                size_t len = pf.length > 0 ? size_t(pf.length) : 0;
                field->s.assign(p, strnlen(p, len));
            }
            }
        }
    }
    catch (std::exception const& e)
    {
        logError(std::string(plugin) + ": reading fields failed: " + e.what());
        return false;
    }
    return true;
}

nvinfer1::PluginFieldCollection const* FieldSet::collection() noexcept
{
    mPluginFields.clear();
    for (auto const& f : mFields)
    {
        switch (f.type)
        {
        case nvinfer1::PluginFieldType::kINT32: mPluginFields.emplace_back(f.name.c_str(), &f.i, f.type, 1); break;
        case nvinfer1::PluginFieldType::kFLOAT32: mPluginFields.emplace_back(f.name.c_str(), &f.f, f.type, 1); break;
        default:
            mPluginFields.emplace_back(f.name.c_str(), f.s.c_str(), f.type, static_cast<int32_t>(f.s.size() + 1));
        }
    }
    mCollection.nbFields = static_cast<int32_t>(mPluginFields.size());
    mCollection.fields = mPluginFields.data();
    return &mCollection;
}

} // namespace attnx
