"""The plugins' C++ field layer, generated from the op registry, so that an attribute's name, type,
default, range and choices are written once: in its op's spec.

For every op with a plugin (`attnx.ops.REGISTRY[op].plugin`), two headers named in the plugin's
file style (`LinearAttention` → `linearAttention`):

- `<op>Params.h`, free of TensorRT (the kernel sources include it): `struct <Op>Params`, one member per
  attribute in the spec's order (bool and int → int32_t, float → float, str → int32_t holding the index
  of its value in the spec's `choices`) initialised to its default, an enum per string attribute
  (enumerators in the order of `choices`), the spec's limits as constexpr members, and
  `firstInvalid()`/`valid()`: the one check of those limits, run by the plugin's createPlugin and by
  the kernel's C entry point alike.
- `<op>Fields.h`: `struct <Op>Io`, the plugin's tensors in the spec's order (an enum of input and one
  of output positions named after the tensors, `q` → `kQ`, the input names, the counts of all and of
  required inputs and of outputs, which tensors are float32 whatever the I/O type, and the I/O in
  words for errors), and `struct <Op>Fields` with the plugin's name, version and namespace, its `Io`,
  its default `FieldSet` (the fields as TensorRT's ONNX parser passes them: bool and int → int32,
  float → float32, str → char) and `parse` from fields into `<Op>Params`, which logs the first field
  the spec does not allow with its value and what was expected.

CMake runs `python -m attnx.plugins.codegen --out <build>/attnx_generated` when it configures
(`attnx plugins build` configures every time, and CMake configures again when a spec changes); the
headers live only in the build folder. `--docs FILE` rewrites the generated fields tables of a
Markdown file (docs/plugins.md) from the same specs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from attnx.errors import AttnxError
from attnx.ops import REGISTRY

GENERATED_DIR = "attnx_generated"
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38
_CHOICE = re.compile(r"[a-z][a-z0-9_]*\Z")
# a float attribute whose doc ends "0 means X" takes X from the shapes when it is 0; its error says so
_ZERO_MEANS = re.compile(r"\b0 means (.+)$")
_DOCS_TABLE = re.compile(r"(<!-- fields of (\w+): [^\n]*-->\n)(.*?)(<!-- end of generated fields -->)", re.S)


class CodegenError(AttnxError):
    """An op spec holds something the C++ field layer cannot carry."""


def plugin_specs() -> list:
    """The registry's specs that have a plugin, in the registry's order."""
    return [spec for spec in REGISTRY.values() if spec.plugin is not None]


def file_stem(spec) -> str:
    """The plugin's file-name stem: LinearAttention → linearAttention."""
    return spec.name[0].lower() + spec.name[1:]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _int_literal(where: str, what: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not INT32_MIN <= value <= INT32_MAX:
        raise CodegenError(f"{where}: {what} {value!r}; expected an int within int32")
    return str(value)


def _float_literal(where: str, what: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > FLOAT32_MAX:
        raise CodegenError(f"{where}: {what} {value!r}; expected a finite number within float32")
    return repr(float(value)) + "f"


@dataclasses.dataclass(frozen=True)
class _Limit:
    name: str     # kChunkSizeMax
    literal: str  # 4096 or 1.0f
    note: str     # what the bound is, for its comment


@dataclasses.dataclass(frozen=True)
class _Field:
    """One attribute as the C++ layer holds it."""

    attr: Any
    member: str                       # chunkSize
    ctype: str                        # int32_t or float
    default: str                      # the member's initialiser
    field: str                        # the FieldSet entry: intField("chunk_size", 64)
    read: str                         # the FieldSet read: f.getInt("chunk_size")
    valid: str | None                 # C++ condition, true when the value is allowed; None: any is
    expected: str                     # what the error says is allowed
    limits: tuple[_Limit, ...] = ()
    enum: tuple[tuple[str, str], ...] = ()  # (enumerator, choice) in the order of choices


def _bounds(a, member: str, literal) -> tuple[tuple[_Limit, ...], list[str], list[str]]:
    """The constexpr limits of a number attribute, its C++ conditions and their words."""
    limits, conditions, words = [], [], []
    stem = "k" + _pascal(a.name)
    if a.low is not None:
        op = ">" if a.low_open else ">="
        limits.append(_Limit(f"{stem}Min", literal("its low bound", a.low),
                             "exclusive" if a.low_open else "inclusive"))
        conditions.append(f"{member} {op} {stem}Min")
        words.append(f"{op} {a.low:g}")
    if a.high is not None:
        limits.append(_Limit(f"{stem}Max", literal("its high bound", a.high), "inclusive"))
        conditions.append(f"{member} <= {stem}Max")
        words.append(f"<= {a.high:g}")
    return tuple(limits), conditions, words


def _field(spec, a) -> _Field:
    where = f"{spec.name}: attribute '{a.name}'"
    member = _camel(a.name)
    want_type = {bool: "int32", int: "int32", float: "float32", str: "char"}.get(a.type)
    if want_type is None:
        raise CodegenError(f"{where} has type {a.type.__name__}; expected bool, int, float or str")
    field_type = a.plugin_field_type
    if field_type != want_type:
        raise CodegenError(f"{where}: plugin field type {field_type}; expected {want_type} for a {a.type.__name__}")
    name = _c_string(a.name)
    if a.type is bool:
        default = str(int(bool(a.default)))
        return _Field(a, member, "int32_t", default, f"intField({name}, {default})", f"f.getInt({name})",
                      f"{member} == 0 || {member} == 1", "0 or 1")
    if a.type is str:
        if not a.choices:
            raise CodegenError(f"{where} is a string without choices ({a.choices!r}); expected a tuple of choices, "
                               "since the kernels take the index of its value among them")
        odd = [c for c in a.choices if not isinstance(c, str) or not _CHOICE.match(c)]
        if odd:
            raise CodegenError(f"{where}: choices {odd!r}; expected lower-case identifiers ([a-z][a-z0-9_]*)")
        if a.default not in a.choices:
            raise CodegenError(f"{where}: default {a.default!r}; expected one of its choices {a.choices!r}")
        enum = tuple((f"k{_pascal(a.name)}{_pascal(c)}", c) for c in a.choices)
        if len({e for e, _ in enum}) != len(enum):
            raise CodegenError(f"{where}: choices {a.choices!r} give the same enumerator twice; expected distinct "
                               "names once underscores are dropped")
        choices = ", ".join(_c_string(c) for c in a.choices)
        return _Field(a, member, "int32_t", enum[a.choices.index(a.default)][0],
                      f"charField({name}, {_c_string(a.default)})",
                      f"choiceIndex(f.getString({name}), {{{choices}}})",
                      f"{member} >= {enum[0][0]} && {member} <= {enum[-1][0]}",
                      "one of " + ", ".join(f"'{c}'" for c in a.choices), enum=enum)
    if a.type is int:
        limits, conditions, words = _bounds(a, member, lambda what, v: _int_literal(where, what, v))
        default = _int_literal(where, "default", a.default)
        expected = "int32" + (" " + " and ".join(words) if words else "")
        return _Field(a, member, "int32_t", default, f"intField({name}, {default})", f"f.getInt({name})",
                      " && ".join(conditions) or None, expected, limits)
    limits, conditions, words = _bounds(a, member, lambda what, v: _float_literal(where, what, v))
    default = _float_literal(where, "default", a.default)
    expected = "a finite float32" + (" " + " and ".join(words) if words else "")
    zero = _ZERO_MEANS.search(a.doc)
    if zero and a.low == 0 and not a.low_open:
        expected += f" (0 means {zero.group(1)})"
    return _Field(a, member, "float", default, f"floatField({name}, {default})", f"f.getFloat({name})",
                  " && ".join([f"std::isfinite({member})", *conditions]), expected, limits)


def _fields(spec) -> list[_Field]:
    fields = [_field(spec, a) for a in spec.attributes]
    members = [f.member for f in fields]
    if len(set(members)) != len(members):
        raise CodegenError(f"{spec.name}: attributes {[a.name for a in spec.attributes]} give the C++ members "
                           f"{members}; expected distinct names")
    return fields


def _banner(spec, what: str) -> list[str]:
    return [f'// Generated from attnx/ops/{_snake(spec.name)} (attnx.ops.REGISTRY["{spec.name}"]) by '
            "attnx/plugins/codegen.py — do not edit.", "//", *what.splitlines(), "#pragma once", ""]


def _doc(text: str) -> str:
    return " ".join(text.split())


def params_header(spec) -> str:
    """`<op>Params.h`: the attributes as the kernels take them, their limits and their one check."""
    fields = _fields(spec)
    params = f"{spec.name}Params"
    entry = f"attnx_{_snake(spec.name)}_forward"
    lines = _banner(spec, f"// {spec.name}'s attributes as its kernels take them, with the spec's defaults and limits and\n"
                          f"// the one check of those limits, which the plugin's createPlugin and the C entry point\n"
                          f"// {entry} both run. Free of TensorRT.")
    lines += ["#include <cmath>", "#include <cstdint>", "", "namespace attnx", "{", "", f"struct {params}", "{"]
    for f in fields:
        if f.enum:
            lines += [f"    // {f.attr.name}: the index of its value among the spec's choices",
                      f"    enum {_pascal(f.attr.name)} : int32_t", "    {"]
            lines += [f"        {e} = {i}, // \"{c}\"" for i, (e, c) in enumerate(f.enum)]
            lines += ["    };", ""]
    limits = [(f, limit) for f in fields for limit in f.limits]
    for f, limit in limits:
        lines.append(f"    static constexpr {f.ctype} {limit.name} = {limit.literal}; // {f.attr.name}, {limit.note}")
    if limits:
        lines.append("")
    for f in fields:
        kind = {bool: "bool, 0 or 1: ", str: f"{_pascal(f.attr.name)}: "}.get(f.attr.type, "")
        lines += [f"    // {kind}{_doc(f.attr.doc)}", f"    {f.ctype} {f.member}{{{f.default}}};"]
    lines += ["", "    // The position, in the spec's order, of the first attribute outside what the spec allows; -1",
              "    // when every one is allowed.", "    int32_t firstInvalid() const noexcept", "    {"]
    for i, f in enumerate(fields):
        if f.valid is not None:
            lines += [f"        if (!({f.valid}))", f"            return {i};"]
    lines += ["        return -1;", "    }", "", "    bool valid() const noexcept", "    {",
              "        return firstInvalid() < 0;", "    }", "};", "", "} // namespace attnx", ""]
    return "\n".join(lines)


# the members of <Op>Io besides the positions; a tensor's enumerator must differ from them
_IO_MEMBERS = ("kNbInputs", "kNbRequiredInputs", "kNbOutputs", "kInputNames", "kInputIsFloat32", "kOutputIsFloat32",
               "kText")


def enumerator(tensor) -> str:
    """The C++ enumerator of a tensor's position: q → kQ, state_s_out → kStateSOut."""
    return "k" + _pascal(tensor.name)


def required_inputs(spec) -> int:
    """How many inputs the op cannot do without: those before the first optional one."""
    return next((i for i, t in enumerate(spec.inputs) if t.optional), len(spec.inputs))


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def io_text(spec) -> str:
    """The plugin's I/O in words, for its errors: "3 or 4 inputs (q, k, v[, bias]) and 1 output (y)". Every
    output is there, optional or not: a plugin has a fixed number of them."""
    names = [t.name for t in spec.inputs]
    required = required_inputs(spec)
    listed = ", ".join(names[:required])
    if required < len(names):
        listed += ("[, " if required else "[") + ", ".join(names[required:]) + "]"
        many = f"{required} {'or' if len(names) == required + 1 else 'to'} {len(names)} inputs"
    else:
        many = _counted(len(names), "input")
    outputs = ", ".join(t.name for t in spec.outputs)
    return f"{many} ({listed}) and {_counted(len(spec.outputs), 'output')} ({outputs})"


def _check_io(spec) -> None:
    where = spec.name
    if not spec.inputs or not spec.outputs:
        raise CodegenError(f"{where}: {len(spec.inputs)} inputs and {len(spec.outputs)} outputs; expected at least one "
                           "of each")
    late = [t.name for t in spec.inputs[required_inputs(spec):] if not t.optional]
    if late:
        raise CodegenError(f"{where}: required inputs {late} after an optional one; expected the optional inputs last, "
                           "since a plugin's inputs are positional")
    for kind, tensor in (("input", spec.inputs[0]), ("output", spec.outputs[0])):
        if tensor.float32_only:
            raise CodegenError(f"{where}: first {kind} '{tensor.name}' is float32_only; expected it in the I/O type, "
                               "which the plugin takes from the first input and gives the first output")
    tensors = [*spec.inputs, *spec.outputs]
    odd = [t.name for t in tensors if not _CHOICE.match(t.name)]
    if odd:
        raise CodegenError(f"{where}: tensor names {odd}; expected lower-case identifiers ([a-z][a-z0-9_]*)")
    enumerators = [enumerator(t) for t in tensors]
    clashes = sorted({e for e in enumerators if enumerators.count(e) > 1 or e in _IO_MEMBERS})
    if clashes:
        raise CodegenError(f"{where}: tensors {[t.name for t in tensors]} give the enumerators {enumerators}, "
                           f"of which {clashes} repeat or clash with {spec.name}Io's members {list(_IO_MEMBERS)}; "
                           "expected distinct names")


def _positions(kind: str, tensors) -> list[str]:
    lines = [f"    enum {kind} : int32_t", "    {"]
    width = max(len(f"{enumerator(t)} = {i},") for i, t in enumerate(tensors))
    for i, t in enumerate(tensors):
        # an output is never optional to the plugin, whatever the op says
        notes = ", ".join(["optional"] * (t.optional and kind == "Input") + ["float32"] * t.float32_only)
        lines.append(f"        {f'{enumerator(t)} = {i},':<{width}} // {t.name} {t.shape}"
                     f"{', ' + notes if notes else ''}: {_doc(t.doc)}")
    return lines + ["    };"]


def _flags(tensors) -> str:
    return "{" + ", ".join("true" if t.float32_only else "false" for t in tensors) + "}"


def io_struct(spec) -> list[str]:
    """`struct <Op>Io`: the plugin's tensors, their positions, names and counts, from the spec."""
    _check_io(spec)
    names = ", ".join(_c_string(t.name) for t in spec.inputs)
    return [f"// {spec.name}'s tensors in the spec's order. The plugin takes the required inputs and then the",
            "// optional ones in order, and always gives every output: TensorRT's ONNX parser wants all of them",
            "// named on the node (--target trt names them and leaves unused ones).",
            f"struct {spec.name}Io", "{", *_positions("Input", spec.inputs), "", *_positions("Output", spec.outputs),
            "", f"    static constexpr int32_t kNbInputs = {len(spec.inputs)};",
            f"    static constexpr int32_t kNbRequiredInputs = {required_inputs(spec)};",
            f"    static constexpr int32_t kNbOutputs = {len(spec.outputs)};",
            f"    static constexpr char const* kInputNames[kNbInputs] = {{{names}}};",
            "    // float32 whatever the I/O type (recurrent states); the others share the first input's type",
            f"    static constexpr bool kInputIsFloat32[kNbInputs] = {_flags(spec.inputs)};",
            f"    static constexpr bool kOutputIsFloat32[kNbOutputs] = {_flags(spec.outputs)};",
            "    // for the error on a wrong count", f"    static constexpr char const* kText = {_c_string(io_text(spec))};",
            "};", ""]


def fields_header(spec) -> str:
    """`<op>Fields.h`: the plugin's I/O and identity, its default fields and their parse into `<Op>Params`."""
    fields = _fields(spec)
    stem = file_stem(spec)
    lines = _banner(spec, f"// The {spec.plugin.name} plugin's tensors (positions, names, counts), name, version, namespace and\n"
                          "// fields: the spec's attributes as TensorRT's ONNX parser passes them (bool and int → int32,\n"
                          f"// float → float32, str → char), read into {spec.name}Params.")
    lines += [f'#include "{GENERATED_DIR}/{stem}Params.h"', '#include "pluginCommon.h"', "", "namespace attnx", "{",
              "", *io_struct(spec), f"struct {spec.name}Fields", "{", f"    using Params = {spec.name}Params;",
              f"    using Io = {spec.name}Io;", "",
              f"    static constexpr char const* kName = {_c_string(spec.plugin.name)};",
              f"    static constexpr char const* kVersion = {_c_string(spec.plugin.version)};",
              f"    static constexpr char const* kNamespace = {_c_string(spec.plugin.namespace)};", "",
              "    // The spec's attributes in its order, with its defaults.", "    static FieldSet defaults()", "    {",
              "        return FieldSet({"]
    lines += [f"            {f.field}," for f in fields]
    lines += ["        });", "    }", "",
              "    // Params from fields FieldSet::parse accepted (names, types, lengths); false after logging the",
              "    // first field outside what the spec allows, with its value and what was expected.",
              "    static bool parse(FieldSet const& f, Params& p)", "    {"]
    lines += [f"        p.{f.member} = {f.read};" for f in fields]
    lines += ["        static char const* const kExpected[] = {"]
    lines += [f"            {_c_string(f.expected)}," for f in fields]
    lines += ["        };", "        return fieldsAccepted(kName, f, p.firstInvalid(), kExpected);", "    }", "};", "",
              "} // namespace attnx", ""]
    return "\n".join(lines)


def headers(specs: Iterable | None = None) -> dict[str, str]:
    """File name → text of every generated header, for `specs` (default: every op with a plugin)."""
    out = {}
    for spec in plugin_specs() if specs is None else specs:
        stem = file_stem(spec)
        out[f"{stem}Params.h"] = params_header(spec)
        out[f"{stem}Fields.h"] = fields_header(spec)
    return out


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_headers(out_dir: str | Path, specs: Iterable | None = None) -> list[Path]:
    """Write the headers into `out_dir`, each only where its text changed (so that a rebuild recompiles
    only what includes a changed one), and remove any other header there (an op no longer in the
    registry). Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = headers(specs)
    for stale in sorted(set(p.name for p in out.glob("*.h")) - set(texts)):
        (out / stale).unlink()
    return [out / name for name, text in texts.items() if _write_if_changed(out / name, text)]


def _allowed_words(a) -> str:
    if a.type is bool:
        return "0, 1"
    if a.choices is not None:
        return ", ".join(f"`{c}`" for c in a.choices)
    parts = ["finite"] if a.type is float else []
    if a.type is int and a.low is not None and a.high is not None and not a.low_open:
        return f"{a.low:g} … {a.high:g}"
    if a.low is not None:
        parts.append(f"{'>' if a.low_open else '>='} {a.low:g}")
    if a.high is not None:
        parts.append(f"<= {a.high:g}")
    return ", ".join(parts) or "any int32"


def _default_words(a) -> str:
    if a.type is bool:
        return str(int(a.default))
    if a.type is str:
        return f"`{a.default}`"
    return f"{a.default:g}"


def fields_table(spec) -> str:
    """The Markdown table of the plugin's fields: name, type, default, allowed values and meaning."""
    rows = ["| field | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for a in spec.attributes:
        meaning = _doc(a.doc).replace("|", "\\|")
        rows.append(f"| {a.name} | {a.plugin_field_type} | {_default_words(a)} | {_allowed_words(a)} | {meaning} |")
    return "\n".join(rows) + "\n"


def update_docs(text: str, specs: Iterable | None = None) -> str:
    """`text` with each table between `<!-- fields of <Plugin>: ... -->` and `<!-- end of generated
    fields -->` rendered from its spec; every plugin must have exactly one such table."""
    by_plugin = {spec.plugin.name: spec for spec in (plugin_specs() if specs is None else specs)}
    seen = [m.group(2) for m in _DOCS_TABLE.finditer(text)]
    unknown = sorted(set(seen) - set(by_plugin))
    if unknown:
        raise CodegenError(f"generated fields tables for {', '.join(unknown)}; expected only the plugins "
                           f"{', '.join(by_plugin)}")
    wrong = [name for name in by_plugin if seen.count(name) != 1]
    if wrong:
        raise CodegenError(f"the plugins {', '.join(wrong)} have {[seen.count(n) for n in wrong]} generated fields "
                           "tables; expected one each, after a line '<!-- fields of <Plugin>: ... -->'")
    return _DOCS_TABLE.sub(lambda m: m.group(1) + fields_table(by_plugin[m.group(2)]) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnx.plugins.codegen",
                                     description="Generate the plugins' C++ field layer from the op registry.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", type=Path, help=f"folder to write the headers into (CMake: <build>/{GENERATED_DIR})")
    what.add_argument("--docs", type=Path, help="Markdown file whose generated fields tables to rewrite")
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            for path in write_headers(args.out):
                print(f"[attnx] wrote {path}")
        else:
            text = args.docs.read_text(encoding="utf-8")
            updated = update_docs(text)
            if _write_if_changed(args.docs, updated):
                print(f"[attnx] rewrote the fields tables of {args.docs}")
    except (AttnxError, OSError) as exc:
        print(f"attnx codegen: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
