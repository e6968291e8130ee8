// The library's entry points, above every plugin (as TensorRT's plugin/api/inferPlugin.cpp is):
// getCreators/setLoggerFinder for `trtexec --dynamicPlugins` and IPluginRegistry::loadLibrary,
// registration at load time when loaded into a TensorRT process, and three host-side entry points (no
// GPU, no TensorRT runtime) that let tests read the creators' fields, round-trip fields through
// createPlugin/getFieldsToSerialize and deserialise a blob of fields.
#include "LinearAttention/linearAttentionPlugin.h"
#include "MixedChunkAttention/mixedChunkAttentionPlugin.h"
#include "NvInferRuntime.h"
#include "PerformerFeatures/performerFeaturesPlugin.h"
#include "ReluSquaredAttention/reluSquaredAttentionPlugin.h"
#include "SparseAttention/sparseAttentionPlugin.h"
#include "pluginCommon.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

// One creator object per plugin, alive for the library's lifetime (TensorRT keeps the pointers).
IPluginCreatorV3One* const* creatorArray(int32_t& n)
{
    static attnx::LinearAttentionPluginCreator linearAttention;
    static attnx::ReluSquaredAttentionPluginCreator reluSquaredAttention;
    static attnx::MixedChunkAttentionPluginCreator mixedChunkAttention;
    static attnx::PerformerFeaturesPluginCreator performerFeatures;
    static attnx::SparseAttentionPluginCreator sparseAttention;
    static IPluginCreatorV3One* const creators[] = {&linearAttention, &reluSquaredAttention, &mixedChunkAttention,
        &performerFeatures, &sparseAttention};
    n = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

// Registers the creators with the registry of the TensorRT runtime already in this process. The
// library links no libnvinfer (it must load where TensorRT's runtime is absent), so the registry
// is looked up by name; where the symbol is missing, nothing registers and loading still succeeds.
struct RegisterAtLoad
{
    RegisterAtLoad()
    {
        using GetRegistry = IPluginRegistry* (*) ();
        void* sym = dlsym(RTLD_DEFAULT, "getPluginRegistry");
        if (!sym)
        {
            // Python's tensorrt module loads libnvinfer privately (RTLD_LOCAL): find it among the
            // libraries already loaded without ever loading it (RTLD_NOLOAD)
            for (char const* lib : {"libnvinfer.so.10", "libnvinfer.so"})
            {
                if (void* h = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD))
                {
                    sym = dlsym(h, "getPluginRegistry");
                    dlclose(h); // drops only the reference RTLD_NOLOAD added
                    if (sym)
                        break;
                }
            }
        }
        if (!sym)
            return;
        IPluginRegistry* registry = reinterpret_cast<GetRegistry>(sym)();
        if (!registry)
            return;
        int32_t n = 0;
        IPluginCreatorV3One* const* creators = creatorArray(n);
        for (int32_t i = 0; i < n; ++i)
        {
            // an earlier load (or loadLibrary after this initialiser) may have registered it: the
            // registry then refuses the duplicate, which is harmless
            registry->registerCreator(*creators[i], creators[i]->getPluginNamespace());
        }
    }
};
RegisterAtLoad const gRegisterAtLoad;

std::string jsonString(std::string const& s)
{
    std::string out = "\"";
    for (char c : s)
    {
        switch (c)
        {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20)
            {
                char buf[8];
                std::snprintf(buf, sizeof(buf), "\\u%04x", c);
                out += buf;
            }
            else
                out += c;
        }
    }
    return out + "\"";
}

std::string jsonFieldValue(PluginField const& f)
{
    if (!f.data)
        return "null";
    char buf[64];
    switch (f.type)
    {
    case PluginFieldType::kINT32: return std::to_string(*static_cast<int32_t const*>(f.data));
    case PluginFieldType::kINT64: return std::to_string(*static_cast<int64_t const*>(f.data));
    case PluginFieldType::kFLOAT32:
        std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(*static_cast<float const*>(f.data)));
        return buf;
    case PluginFieldType::kFLOAT64:
        std::snprintf(buf, sizeof(buf), "%.17g", *static_cast<double const*>(f.data));
        return buf;
    case PluginFieldType::kCHAR:
    {
        char const* p = static_cast<char const*>(f.data);
        return jsonString(std::string(p, strnlen(p, f.length > 0 ? size_t(f.length) : 0)));
    }
    default: return "null";
    }
}

std::string jsonFields(PluginFieldCollection const* fc, char const* valueKey = "default")
{
    std::string out = "[";
    for (int32_t i = 0; fc && i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        out += std::string(i ? ", " : "") + "{\"name\": " + jsonString(f.name ? f.name : "") + ", \"type\": "
            + jsonString(attnx::fieldTypeName(f.type)) + ", \"" + valueKey + "\": " + jsonFieldValue(f) + "}";
    }
    return out + "]";
}

std::string jsonCreator(IPluginCreatorV3One* c, PluginFieldCollection const* fc, char const* fieldsKey)
{
    return "{\"name\": " + jsonString(c->getPluginName()) + ", \"version\": " + jsonString(c->getPluginVersion())
        + ", \"namespace\": " + jsonString(c->getPluginNamespace()) + ", \"" + fieldsKey + "\": " + jsonFields(fc)
        + "}";
}

// Copies s with its terminator into buf; the length needed (without terminator) when it does not fit.
int copyOut(std::string const& s, char* buf, size_t len)
{
    if (!buf || len < s.size() + 1)
        return -static_cast<int>(s.size() + 1);
    std::memcpy(buf, s.c_str(), s.size() + 1);
    return static_cast<int>(s.size());
}

// An error text into buf, cut to fit: the status code returned with it leaves no way to ask for more room.
void copyError(std::string const& s, char* buf, size_t len)
{
    if (!buf || len == 0)
        return;
    size_t const n = std::min(s.size(), len - 1);
    std::memcpy(buf, s.data(), n);
    buf[n] = '\0';
}

} // namespace

extern "C" __attribute__((visibility("default"))) IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    int32_t n = 0;
    IPluginCreatorV3One* const* creators = creatorArray(n);
    // a fixed array of base pointers: the V3One creators converted once
    static std::vector<IPluginCreatorInterface*> const bases = [creators, n] {
        std::vector<IPluginCreatorInterface*> v;
        for (int32_t i = 0; i < n; ++i)
            v.push_back(creators[i]);
        return v;
    }();
    nbCreators = n;
    return bases.data();
}

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(ILoggerFinder* finder)
{
    attnx::setLoggerFinder(finder);
}

// JSON [{"name","version","namespace","fields":[{"name","type","default"}]}] from getFieldNames().
// Returns the length written, or -(bytes needed) when `len` is too small.
extern "C" __attribute__((visibility("default"))) int attnx_describe_creators(char* buf, size_t len)
{
    try
    {
        int32_t n = 0;
        IPluginCreatorInterface* const* creators = getCreators(n);
        std::string out = "[";
        for (int32_t i = 0; i < n; ++i)
        {
            auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
            out += std::string(i ? ", " : "") + jsonCreator(c, c->getFieldNames(), "fields");
        }
        return copyOut(out + "]", buf, len);
    }
    catch (...)
    {
        return copyOut("[]", buf, len) < 0 ? -3 : -3;
    }
}

// Status codes of attnx_roundtrip (the Python side names them).
enum RoundtripStatus
{
    kRoundtripNoCreator = -1000,
    kRoundtripCreateFailed = -1001,
    kRoundtripBadInput = -1002,
    kRoundtripCloneDiffers = -1003,
};

namespace
{

IPluginCreatorV3One* findCreator(char const* name)
{
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (name && std::strcmp(c->getPluginName(), name) == 0)
            return c;
    }
    return nullptr;
}

// createPlugin from `fc` in `phase`, then again from its getFieldsToSerialize() (runtime phase, as
// deserialisation does) and from a clone; writes {"name","version","namespace","serialized":[...]}
// when all three serialise alike. A refusal writes the error createPlugin logged.
int createAndRoundtrip(IPluginCreatorV3One* creator, PluginFieldCollection const* fc, TensorRTPhase phase, char* out,
    size_t len)
{
    attnx::clearLastError();
    std::unique_ptr<IPluginV3> plugin(creator->createPlugin(creator->getPluginName(), fc, phase));
    if (!plugin)
    {
        copyError(attnx::lastError().empty() ? "createPlugin returned null without logging an error"
                                           : attnx::lastError(), out, len);
        return kRoundtripCreateFailed;
    }
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    if (!runtime || !core || !plugin->getCapabilityInterface(PluginCapabilityType::kBUILD))
    {
        copyError("plugin lacks a core, build or runtime capability", out, len);
        return kRoundtripCreateFailed;
    }
    std::string const first = jsonFields(runtime->getFieldsToSerialize(), "value");

    // what deserialisation does: the serialised fields back into createPlugin
    std::unique_ptr<IPluginV3> again(
        creator->createPlugin(core->getPluginName(), runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME));
    if (!again)
    {
        copyError("createPlugin refused the plugin's own serialised fields: " + attnx::lastError(), out, len);
        return kRoundtripCreateFailed;
    }
    auto* runtime2 = static_cast<IPluginV3OneRuntime*>(again->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    std::unique_ptr<IPluginV3> cloned(again->clone());
    auto* runtime3 = cloned
        ? static_cast<IPluginV3OneRuntime*>(cloned->getCapabilityInterface(PluginCapabilityType::kRUNTIME))
        : nullptr;
    std::string const second = jsonFields(runtime2->getFieldsToSerialize(), "value");
    if (!runtime3 || jsonFields(runtime3->getFieldsToSerialize(), "value") != second || second != first)
    {
        copyError("serialised fields changed across createPlugin/clone: " + first + " vs " + second, out, len);
        return kRoundtripCloneDiffers;
    }
    return copyOut("{\"name\": " + jsonString(core->getPluginName()) + ", \"version\": "
            + jsonString(core->getPluginVersion()) + ", \"namespace\": " + jsonString(core->getPluginNamespace())
            + ", \"serialized\": " + second + "}",
        out, len);
}

} // namespace

// Builds a PluginFieldCollection from `fields_text` — one field per line, "name<TAB>type<TAB>value"
// with type int32, int64, float32, float64 or char — calls createPlugin (build phase), then
// recreates the plugin from its getFieldsToSerialize() (runtime phase, as deserialisation does)
// and writes {"name","version","namespace","serialized":[...]} from the recreated plugin.
// Errors: kRoundtripCreateFailed with the logged error text in `out`, kRoundtripNoCreator,
// kRoundtripBadInput (text in `out`; also for an int32 value outside int32, never wrapped); an error
// text is cut to fit `len`. On success, -(bytes needed) when `len` is too small.
extern "C" __attribute__((visibility("default"))) int attnx_roundtrip(
    char const* creatorName, char const* fieldsText, char* out, size_t len)
{
    try
    {
        IPluginCreatorV3One* creator = findCreator(creatorName);
        if (!creator)
        {
            copyError(std::string("no creator named '") + (creatorName ? creatorName : "") + "'", out, len);
            return kRoundtripNoCreator;
        }

        // parsed values live in these vectors; reserve so PluginField pointers stay valid
        std::string const text = fieldsText ? fieldsText : "";
        std::vector<std::string> names, strings;
        std::vector<int32_t> i32;
        std::vector<int64_t> i64;
        std::vector<float> f32;
        std::vector<double> f64;
        size_t const maxFields = 64;
        names.reserve(maxFields);
        strings.reserve(maxFields);
        i32.reserve(maxFields);
        i64.reserve(maxFields);
        f32.reserve(maxFields);
        f64.reserve(maxFields);
        std::vector<PluginField> fields;
        size_t pos = 0;
        while (pos < text.size())
        {
            size_t end = text.find('\n', pos);
            if (end == std::string::npos)
                end = text.size();
            std::string const line = text.substr(pos, end - pos);
            pos = end + 1;
            if (line.empty())
                continue;
            size_t const t1 = line.find('\t');
            size_t const t2 = t1 == std::string::npos ? t1 : line.find('\t', t1 + 1);
            if (t2 == std::string::npos || fields.size() >= maxFields)
            {
                copyError("field line '" + line + "' is not name<TAB>type<TAB>value (at most 64 lines)", out, len);
                return kRoundtripBadInput;
            }
            names.push_back(line.substr(0, t1));
            std::string const type = line.substr(t1 + 1, t2 - t1 - 1);
            std::string const value = line.substr(t2 + 1);
            char const* name = names.back().c_str();
            char* endp = nullptr;
            errno = 0;
            if (type == "int32")
            {
                long long const x = std::strtoll(value.c_str(), &endp, 10);
                if (errno == 0 && (x < INT32_MIN || x > INT32_MAX))
                {
                    // a cast would wrap it into range and the plugin would accept a value never given
                    copyError("field '" + names.back() + "': value '" + value + "' is outside int32 ["
                            + std::to_string(INT32_MIN) + ", " + std::to_string(INT32_MAX) + "]", out, len);
                    return kRoundtripBadInput;
                }
                i32.push_back(static_cast<int32_t>(x));
                fields.emplace_back(name, &i32.back(), PluginFieldType::kINT32, 1);
            }
            else if (type == "int64")
            {
                i64.push_back(std::strtoll(value.c_str(), &endp, 10));
                fields.emplace_back(name, &i64.back(), PluginFieldType::kINT64, 1);
            }
            else if (type == "float32")
            {
                f32.push_back(std::strtof(value.c_str(), &endp));
                fields.emplace_back(name, &f32.back(), PluginFieldType::kFLOAT32, 1);
            }
            else if (type == "float64")
            {
                f64.push_back(std::strtod(value.c_str(), &endp));
                fields.emplace_back(name, &f64.back(), PluginFieldType::kFLOAT64, 1);
            }
            else if (type == "char")
            {
                // as the ONNX parser passes a string attribute: its bytes, no terminator counted
                strings.push_back(value);
                fields.emplace_back(name, strings.back().data(), PluginFieldType::kCHAR,
                    static_cast<int32_t>(strings.back().size()));
                continue;
            }
            else
            {
                copyError("field '" + names.back() + "': type '" + type
                        + "' is not one of int32, int64, float32, float64, char", out, len);
                return kRoundtripBadInput;
            }
            if (errno != 0 || !endp || *endp != '\0' || value.empty())
            {
                copyError("field '" + names.back() + "': value '" + value + "' is not a " + type, out, len);
                return kRoundtripBadInput;
            }
        }
        PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
        return createAndRoundtrip(creator, &fc, TensorRTPhase::kBUILD, out, len);
    }
    catch (std::exception const& e)
    {
        copyError(std::string("roundtrip failed: ") + e.what(), out, len);
        return kRoundtripBadInput;
    }
}

namespace
{

// Bytes per element of a PluginField's type; 0 for a type that carries no element data here (kDIMS,
// kUNKNOWN, values outside the enum), which the blob then gives no bytes.
size_t elementSize(int32_t type)
{
    switch (static_cast<PluginFieldType>(type))
    {
    case PluginFieldType::kINT8:
    case PluginFieldType::kCHAR:
    case PluginFieldType::kFP8:
    case PluginFieldType::kINT4:
    case PluginFieldType::kFP4: return 1;
    case PluginFieldType::kFLOAT16:
    case PluginFieldType::kBF16:
    case PluginFieldType::kINT16: return 2;
    case PluginFieldType::kFLOAT32:
    case PluginFieldType::kINT32: return 4;
    case PluginFieldType::kFLOAT64:
    case PluginFieldType::kINT64: return 8;
    default: return 0;
    }
}

} // namespace

// Deserialisation from a blob of fields as an engine stores them: int32 nbFields, then per field
// uint32 name length, the name's bytes (no terminator), int32 type (PluginFieldType), int32 length
// and length × the type's element size bytes of data (none when length <= 0). Every field's data
// is copied into an allocation of exactly its size, so a read past it is a sanitizer report. The
// fields go to createPlugin in the runtime phase and round-trip as attnx_roundtrip's do.
// Errors: kRoundtripBadInput for a blob that is truncated, too long or holds over 64 fields (text in
// `out`), kRoundtripCreateFailed with the logged error, kRoundtripNoCreator.
extern "C" __attribute__((visibility("default"))) int attnx_deserialize(
    char const* creatorName, unsigned char const* blob, size_t blobLen, char* out, size_t len)
{
    try
    {
        IPluginCreatorV3One* creator = findCreator(creatorName);
        if (!creator)
        {
            copyError(std::string("no creator named '") + (creatorName ? creatorName : "") + "'", out, len);
            return kRoundtripNoCreator;
        }
        size_t pos = 0;
        auto take = [&](size_t n, char const* what) -> unsigned char const* {
            if (!blob || n > blobLen - pos)
                throw std::length_error("blob of " + std::to_string(blobLen) + " bytes ends at byte "
                    + std::to_string(pos) + " where " + std::to_string(n) + " bytes of " + what + " were expected");
            unsigned char const* p = blob + pos;
            pos += n;
            return p;
        };
        auto takeInt = [&](char const* what) {
            int32_t v;
            std::memcpy(&v, take(sizeof(v), what), sizeof(v));
            return v;
        };
        int32_t const nbFields = takeInt("nbFields");
        if (nbFields < 0 || nbFields > 64)
        {
            copyError("blob holds nbFields = " + std::to_string(nbFields) + "; expected 0 to 64", out, len);
            return kRoundtripBadInput;
        }
        std::vector<std::string> names(static_cast<size_t>(nbFields));
        std::vector<std::unique_ptr<unsigned char[]>> data(static_cast<size_t>(nbFields));
        std::vector<PluginField> fields;
        for (int32_t i = 0; i < nbFields; ++i)
        {
            uint32_t nameLen;
            std::memcpy(&nameLen, take(sizeof(nameLen), "a name length"), sizeof(nameLen));
            unsigned char const* name = take(nameLen, "a name");
            names[i].assign(reinterpret_cast<char const*>(name), nameLen);
            int32_t const type = takeInt("a type");
            int32_t const length = takeInt("a length");
            size_t const bytes = length > 0 ? static_cast<size_t>(length) * elementSize(type) : 0;
            unsigned char const* src = take(bytes, "field data");
            data[i].reset(new unsigned char[bytes]);
            if (bytes)
                std::memcpy(data[i].get(), src, bytes);
            fields.emplace_back(names[i].c_str(), data[i].get(), static_cast<PluginFieldType>(type), length);
        }
        if (pos != blobLen)
        {
            copyError("blob of " + std::to_string(blobLen) + " bytes holds " + std::to_string(nbFields)
                    + " fields in its first " + std::to_string(pos) + " bytes; expected nothing after them",
                out, len);
            return kRoundtripBadInput;
        }
        PluginFieldCollection fc{nbFields, fields.data()};
        return createAndRoundtrip(creator, &fc, TensorRTPhase::kRUNTIME, out, len);
    }
    catch (std::exception const& e)
    {
        copyError(std::string("deserialisation failed: ") + e.what(), out, len);
        return kRoundtripBadInput;
    }
}
