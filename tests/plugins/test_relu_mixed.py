"""Host-side checks of the ReluSquaredAttention and MixedChunkAttention creators: fields agree with
the op spec, non-default fields survive createPlugin → getFieldsToSerialize → createPlugin, and every
bad field is refused with a message naming the field, its value and what is allowed.

The kernels need a GPU; these tests need only cmake and nvcc (skipped without them).
"""

from __future__ import annotations

import math

import pytest

from attnx.errors import AttributeValueError
from attnx.ops import REGISTRY
from attnx.plugins import library
from attnx.plugins.library import PluginCreateError

OPS = ("ReluSquaredAttention", "MixedChunkAttention")

NON_DEFAULT = {
    "ReluSquaredAttention": {"causal": 1, "scale": 0.125, "norm": "visible", "fixed_length": 64,
                             "norm_placement": "inside"},
    "MixedChunkAttention": {"causal": 1, "chunk_size": 128, "quad_scale": 0.5, "lin_scale": 0.25},
}

# (op, fields, types, words the error must contain)
BAD_FIELDS = [
    ("ReluSquaredAttention", {"causal": 2}, None, ["'causal'", "2", "0 or 1"]),
    ("ReluSquaredAttention", {"scale": -1.0}, None, ["'scale'", "-1", ">= 0"]),
    ("ReluSquaredAttention", {"scale": math.inf}, None, ["'scale'", "inf", "finite"]),
    ("ReluSquaredAttention", {"scale": math.nan}, None, ["'scale'", "nan", "finite"]),
    ("ReluSquaredAttention", {"norm": "N"}, None, ["'norm'", "'N'", "'n', 'visible', 'fixed', 'none'"]),
    ("ReluSquaredAttention", {"fixed_length": 0}, None, ["'fixed_length'", "0", ">= 1"]),
    ("ReluSquaredAttention", {"norm_placement": "before"}, None, ["'norm_placement'", "'before'", "'outside', 'inside'"]),
    ("ReluSquaredAttention", {"scale": 1}, {"scale": "int32"}, ["'scale'", "int32", "float32"]),
    ("ReluSquaredAttention", {"bogus": 1}, None, ["'bogus'", "causal, scale, norm, fixed_length, norm_placement"]),
    ("MixedChunkAttention", {"causal": -1}, None, ["'causal'", "-1", "0 or 1"]),
    ("MixedChunkAttention", {"chunk_size": 0}, None, ["'chunk_size'", "0", ">= 1 and <= 4096"]),
    ("MixedChunkAttention", {"chunk_size": 4097}, None, ["'chunk_size'", "4097", "<= 4096"]),
    ("MixedChunkAttention", {"quad_scale": -0.5}, None, ["'quad_scale'", "-0.5", ">= 0"]),
    ("MixedChunkAttention", {"lin_scale": math.nan}, None, ["'lin_scale'", "nan", "finite"]),
    ("MixedChunkAttention", {"chunk_size": 64.0}, None, ["'chunk_size'", "float32", "int32"]),
]




@pytest.mark.parametrize("op", OPS)
def test_creator_fields_equal_spec(plugin_lib, op):
    creators = {c["name"]: c for c in library.plugin_info(plugin_lib)}
    creator = creators[op]
    assert (creator["version"], creator["namespace"]) == ("1", "attnx")
    fields = [{k: f[k] for k in ("name", "type", "default")} for f in creator["fields"]]
    assert fields == REGISTRY[op].plugin_fields()


@pytest.mark.parametrize("op", OPS)
def test_default_fields_round_trip(plugin_lib, op):
    serialized = library.roundtrip(op, {}, path=plugin_lib)
    assert [(f["name"], f["type"], f["value"]) for f in serialized] == \
        [(f["name"], f["type"], f["default"]) for f in REGISTRY[op].plugin_fields()]


@pytest.mark.parametrize("op", OPS)
def test_non_default_fields_round_trip(plugin_lib, op):
    given = NON_DEFAULT[op]
    for attr in REGISTRY[op].attributes:  # the values are ones the spec itself accepts
        attr.validate(op, given[attr.name])
    serialized = {f["name"]: f["value"] for f in library.roundtrip(op, given, path=plugin_lib)}
    assert serialized == given


@pytest.mark.parametrize("op, fields, types, words", BAD_FIELDS,
                         ids=[f"{op}-{next(iter(fields))}={next(iter(fields.values()))}" for op, fields, _, _ in BAD_FIELDS])
def test_bad_field_refused_with_message(plugin_lib, op, fields, types, words):
    with pytest.raises(PluginCreateError) as err:
        library.roundtrip(op, fields, types, path=plugin_lib)
    message = str(err.value)
    assert op in message
    for word in words:
        assert word in message, f"{word!r} missing from {message!r}"


@pytest.mark.parametrize("op", OPS)
def test_spec_rejects_what_the_plugin_rejects(op):
    # the plugin's ranges mirror the spec's: each bad value above is also refused by the spec
    for bad_op, fields, types, _ in BAD_FIELDS:
        if bad_op != op or types or set(fields) - {a.name for a in REGISTRY[op].attributes}:
            continue
        (name, value), = fields.items()
        attr = next(a for a in REGISTRY[op].attributes if a.name == name)
        with pytest.raises(AttributeValueError):
            attr.validate(op, value)
