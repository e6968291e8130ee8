"""The plugins' C++ field and I/O layer is generated from the op registry (attnx/plugins/codegen.py): the
headers both builds used are what the generator writes from the specs now, they carry every attribute's
type, default, limits and choices and every tensor's position, name and float32-ness in the spec's order,
hand-written C++ restates none of them, and the fields tables of docs/plugins.md are the generator's.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from attnx.ops import REGISTRY
from attnx.plugins import codegen
from helpers.build import REPO

PLUGIN_OPS = [name for name, spec in REGISTRY.items() if spec.plugin is not None]
DOCS = REPO / "docs" / "plugins.md"


def _used_by_build(build_dir) -> dict[str, str]:
    generated = build_dir / codegen.GENERATED_DIR
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(generated.glob("*.h"))}


def _assert_same_headers(found: dict[str, str], where) -> None:
    want = codegen.headers()
    assert sorted(found) == sorted(want), f"{where} holds {sorted(found)}; the generator writes {sorted(want)}"
    for name, text in want.items():
        assert found[name] == text, f"{where}/{name} differs from what the generator writes from the spec now"


def test_the_library_was_built_from_the_spec_as_it_is(plugin_lib):
    _assert_same_headers(_used_by_build(plugin_lib.parent), plugin_lib.parent / codegen.GENERATED_DIR)


def test_the_emulated_kernels_were_built_from_the_spec_as_it_is(emulated_kernels):
    _assert_same_headers(_used_by_build(emulated_kernels.parent), emulated_kernels.parent / codegen.GENERATED_DIR)


def test_generation_is_deterministic_and_marked_generated():
    first, second = codegen.headers(), codegen.headers()
    assert first == second
    assert sorted(first) == sorted(f"{codegen.file_stem(REGISTRY[op])}{part}.h"
                                   for op in PLUGIN_OPS for part in ("Params", "Fields"))
    for name, text in first.items():
        assert text.startswith("// Generated from attnx/ops/") and "do not edit" in text.splitlines()[0], name
    for op in PLUGIN_OPS:
        params = first[f"{codegen.file_stem(REGISTRY[op])}Params.h"]
        assert "#include \"" not in params and "NvInfer" not in params, "the kernels' header must stay TensorRT-free"


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_params_header_carries_the_spec(op):
    """Members in the spec's order with its defaults, enumerators in the order of `choices`, and each
    limit once, as a constexpr the check compares against."""
    spec = REGISTRY[op]
    text = codegen.params_header(spec)
    members = re.findall(r"^    (int32_t|float) (\w+)\{(.+)\};$", text, re.M)
    assert [m[1] for m in members] == [codegen._camel(a.name) for a in spec.attributes]
    for (ctype, _, default), a in zip(members, spec.attributes):
        assert ctype == ("float" if a.type is float else "int32_t"), (a.name, ctype)
        if a.choices is not None:
            block = re.search(rf"enum {codegen._pascal(a.name)} : int32_t\n    {{\n(.*?)\n    }};", text, re.S)
            enumerators = re.findall(r"^        (k\w+) = (\d+), // \"(\w+)\"$", block.group(1), re.M)
            assert [(int(i), c) for _, i, c in enumerators] == list(enumerate(a.choices)), (a.name, enumerators)
            assert default == enumerators[a.choices.index(a.default)][0]
        elif a.type is float:
            assert float(default.removesuffix("f")) == a.default
        else:
            assert int(default) == int(a.default)
        for bound, which in ((a.low, "Min"), (a.high, "Max")):
            limit = re.findall(rf"static constexpr \w+ k{codegen._pascal(a.name)}{which} = ([^;]+);", text)
            if bound is None:
                assert limit == [], (a.name, which, limit)
            else:
                assert len(limit) == 1 and float(limit[0].removesuffix("f")) == bound, (a.name, which, limit)
                comparison = ">" if which == "Min" and a.low_open else (">=" if which == "Min" else "<=")
                assert f"{codegen._camel(a.name)} {comparison} k{codegen._pascal(a.name)}{which}" in text


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_fields_header_reads_every_field_of_the_spec(op):
    spec = REGISTRY[op]
    text = codegen.fields_header(spec)
    makers = re.findall(r"^            (int|float|char)Field\(\"(\w+)\", ([^)]+)\),$", text, re.M)
    assert [(m[1], {"int": "int32", "float": "float32", "char": "char"}[m[0]]) for m in makers] == \
        [(f["name"], f["type"]) for f in spec.plugin_fields()]
    assert f'kName = "{spec.plugin.name}"' in text and f'kVersion = "{spec.plugin.version}"' in text
    assert f'kNamespace = "{spec.plugin.namespace}"' in text
    expected = re.findall(r"^            (\".*\"),$", text, re.M)
    assert len(expected) == len(spec.attributes)
    for words, a in zip(expected, spec.attributes):
        for choice in a.choices or ():
            assert f"'{choice}'" in words, (a.name, words)


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_io_struct_carries_the_spec(op):
    """Input and output positions named after the spec's tensors in its order, the input names, the counts
    (required: the inputs before the first optional one), the float32-only flags and the I/O in words."""
    spec = REGISTRY[op]
    text = codegen.fields_header(spec)
    io = re.search(rf"^struct {op}Io\n\{{\n(.*?)^\}};$", text, re.M | re.S).group(1)
    assert f"    using Io = {op}Io;" in text
    for kind, tensors in (("Input", spec.inputs), ("Output", spec.outputs)):
        block = re.search(rf"enum {kind} : int32_t\n    {{\n(.*?)\n    }};", io, re.S).group(1)
        enumerators = re.findall(r"^        (k\w+) = (\d+), +// (\w+) ", block, re.M)
        assert enumerators == [(codegen.enumerator(t), str(i), t.name) for i, t in enumerate(tensors)], (kind, block)

    def constant(name):
        return re.search(rf"static constexpr [\w *]+ {name}(?:\[\w+\])? = (.+);$", io, re.M).group(1)

    required = [t for t in spec.inputs if not t.optional]
    assert spec.inputs[:len(required)] == tuple(required), "the optional inputs come last"
    assert int(constant("kNbInputs")) == len(spec.inputs)
    assert int(constant("kNbRequiredInputs")) == len(required)
    assert int(constant("kNbOutputs")) == len(spec.outputs)
    assert constant("kInputNames") == "{" + ", ".join(f'"{t.name}"' for t in spec.inputs) + "}"
    for name, tensors in (("kInputIsFloat32", spec.inputs), ("kOutputIsFloat32", spec.outputs)):
        assert constant(name) == "{" + ", ".join("true" if t.float32_only else "false" for t in tensors) + "}"
    words = constant("kText")
    optional = [t.name for t in spec.inputs if t.optional]
    listed = ", ".join(t.name for t in required) + (f"[, {', '.join(optional)}]" if optional else "")
    assert f"inputs ({listed})" in words or f"input ({listed})" in words, words
    assert words.endswith(f"({', '.join(t.name for t in spec.outputs)})\""), words


def test_io_text_reads_the_counts():
    assert codegen.io_text(REGISTRY["SparseAttention"]) == "3 inputs (q, k, v) and 1 output (y)"
    assert codegen.io_text(REGISTRY["ReluSquaredAttention"]) == "3 or 4 inputs (q, k, v[, bias]) and 1 output (y)"
    assert codegen.io_text(REGISTRY["LinearAttention"]) == \
        "3 to 5 inputs (q, k, v[, state_s, state_z]) and 3 outputs (y, state_s_out, state_z_out)"


def test_generator_refuses_io_the_plugins_cannot_carry():
    spec = REGISTRY["LinearAttention"]
    q, k, v, state_s, state_z = spec.inputs
    y = spec.outputs[0]
    cases = [
        (dict(inputs=(q, state_s, k, v)), "required inputs ['k', 'v'] after an optional one"),
        (dict(inputs=(dataclasses.replace(q, float32_only=True), k, v)), "first input 'q' is float32_only"),
        (dict(outputs=(dataclasses.replace(y, float32_only=True),)), "first output 'y' is float32_only"),
        (dict(outputs=(y, dataclasses.replace(y, name="q"))), "['kQ'] repeat or clash"),
        (dict(outputs=(y, dataclasses.replace(y, name="text"))), "['kText'] repeat or clash"),
        (dict(inputs=(dataclasses.replace(q, name="Q"), k, v)), "expected lower-case identifiers"),
        (dict(outputs=()), "expected at least one of each"),
    ]
    for change, words in cases:
        with pytest.raises(codegen.CodegenError, match=re.escape(words)):
            codegen.headers([dataclasses.replace(spec, **change)])


def test_generator_refuses_what_cpp_cannot_carry():
    spec = REGISTRY["LinearAttention"]
    feature_map, eps, chunk = spec.attr("feature_map"), spec.attr("eps"), spec.attr("chunk_size")
    cases = [
        (dataclasses.replace(feature_map, choices=None), "a string without choices"),
        (dataclasses.replace(feature_map, choices=("elu", "Relu+1")), "expected lower-case identifiers"),
        (dataclasses.replace(feature_map, default="tanh"), "default 'tanh'; expected one of its choices"),
        (dataclasses.replace(chunk, high=2**31), "its high bound 2147483648; expected an int within int32"),
        (dataclasses.replace(eps, high=1e39), "expected a finite number within float32"),
        (dataclasses.replace(chunk, type=list), "has type list; expected bool, int, float or str"),
    ]
    for attr, words in cases:
        broken = dataclasses.replace(spec, attributes=(attr,))
        with pytest.raises(codegen.CodegenError, match=re.escape(words)):
            codegen.headers([broken])


def test_writing_rewrites_only_what_changed_and_drops_stale_headers(tmp_path):
    out = tmp_path / codegen.GENERATED_DIR
    written = codegen.write_headers(out)
    assert sorted(p.name for p in written) == sorted(codegen.headers())
    (out / "droppedOpParams.h").write_text("// an op no longer in the registry\n")
    assert codegen.write_headers(out) == []
    assert sorted(p.name for p in out.glob("*.h")) == sorted(codegen.headers())


def test_the_cli_writes_headers_and_says_what_went_wrong(tmp_path, capsys):
    assert codegen.main(["--out", str(tmp_path / "gen")]) == 0
    assert sorted(p.name for p in (tmp_path / "gen").glob("*.h")) == sorted(codegen.headers())
    bad = tmp_path / "bad.md"
    bad.write_text("no generated tables here\n")
    assert codegen.main(["--docs", str(bad)]) == 2
    assert "expected one each" in capsys.readouterr().err


def test_docs_fields_tables_are_the_generated_ones():
    text = DOCS.read_text(encoding="utf-8")
    assert codegen.update_docs(text) == text, \
        "docs/plugins.md's fields tables differ from the spec: run python -m attnx.plugins.codegen --docs docs/plugins.md"


def _literals_in_hand_written_sources(words: set[str]) -> list[str]:
    """Each string literal of trt_plugins/'s C++ that is one of `words`, as 'path: "literal"'."""
    found = []
    for path in sorted(p for ext in ("h", "cpp", "cu", "cuh") for p in (REPO / "trt_plugins").rglob(f"*.{ext}")):
        for literal in re.findall(r'"([^"\\\n]*)"', path.read_text(encoding="utf-8")):
            if literal in words:
                found.append(f"{path.relative_to(REPO)}: \"{literal}\"")
    return found


def test_hand_written_cpp_restates_no_field():
    """No field name, string choice or default of a string field stands as a string literal in
    trt_plugins/: the generated headers are the only C++ that names them."""
    words = {w for op in PLUGIN_OPS for a in REGISTRY[op].attributes for w in (a.name, *(a.choices or ()))}
    assert _literals_in_hand_written_sources(words) == []


def test_hand_written_cpp_restates_no_tensor_name():
    """No input or output name stands as a string literal in trt_plugins/: the plugins read them, and their
    positions, from the generated <Op>Io."""
    words = {t.name for op in PLUGIN_OPS for t in (*REGISTRY[op].inputs, *REGISTRY[op].outputs)}
    assert _literals_in_hand_written_sources(words) == []
