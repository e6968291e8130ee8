"""Host-side checks of the PerformerFeatures and SparseAttention plugins: creator fields agree with the op
spec, default and non-default fields survive createPlugin → getFieldsToSerialize → createPlugin, every
bad field is refused with a message naming the field, its value and what is allowed, and the sparse
kernel's key enumeration (compiled for the host) is exactly the spec's mask.

The kernels themselves need a GPU; these tests need only cmake and nvcc (skipped without them).
"""

from __future__ import annotations

import math
import subprocess

import pytest
import torch

from attnx.errors import AttributeValueError, BackendUnavailableError
from attnx.ops import REGISTRY
from attnx.ops.sparse_attention import PATTERNS, allowed
from attnx.plugins import build, codegen, library
from attnx.plugins.library import PluginCreateError
from helpers.build import REPO

OPS = ("PerformerFeatures", "SparseAttention")

NON_DEFAULT = {
    "PerformerFeatures": {"kind": "key_fixed", "eps": 0.5, "offset": -3.25},
    "SparseAttention": {"pattern": "strided", "window": 3, "dilation": 5, "stride": 7, "block": 9, "causal": 1,
                        "scale": 0.125, "look_back": 2, "look_ahead": 3},
}

# (op, fields, types, words the error must contain)
BAD_FIELDS = [
    ("PerformerFeatures", {"kind": "Query"}, None, ["'kind'", "'Query'", "'query', 'key', 'key_fixed'"]),
    ("PerformerFeatures", {"kind": ""}, None, ["'kind'", "''", "'query', 'key', 'key_fixed'"]),
    ("PerformerFeatures", {"eps": -0.5}, None, ["'eps'", "-0.5", ">= 0 and <= 1"]),
    ("PerformerFeatures", {"eps": 2.0}, None, ["'eps'", "2", "<= 1"]),
    ("PerformerFeatures", {"eps": math.nan}, None, ["'eps'", "nan", "finite"]),
    ("PerformerFeatures", {"offset": math.inf}, None, ["'offset'", "inf", "finite"]),
    ("PerformerFeatures", {"offset": 1}, {"offset": "int32"}, ["'offset'", "int32", "float32"]),
    ("PerformerFeatures", {"stabiliser": 1.0}, None, ["'stabiliser'", "kind, eps, offset"]),
    ("SparseAttention", {"pattern": "dense"}, None, ["'pattern'", "'dense'", "'local', 'dilated', 'strided', 'block'"]),
    ("SparseAttention", {"window": 0}, None, ["'window'", "0", ">= 1 and <= 4096"]),
    ("SparseAttention", {"dilation": -2}, None, ["'dilation'", "-2", ">= 1 and <= 4096"]),
    ("SparseAttention", {"stride": 4097}, None, ["'stride'", "4097", "<= 4096"]),
    ("SparseAttention", {"block": 0}, None, ["'block'", "0", ">= 1 and <= 4096"]),
    ("SparseAttention", {"causal": 2}, None, ["'causal'", "2", "0 or 1"]),
    ("SparseAttention", {"scale": -1.0}, None, ["'scale'", "-1", ">= 0"]),
    ("SparseAttention", {"scale": math.nan}, None, ["'scale'", "nan", "finite"]),
    ("SparseAttention", {"window": 16.0}, None, ["'window'", "float32", "int32"]),
    ("SparseAttention", {"look_back": -1}, None, ["'look_back'", "-1", ">= 0 and <= 4096"]),
    ("SparseAttention", {"look_ahead": 4097}, None, ["'look_ahead'", "4097", "<= 4096"]),
    ("SparseAttention", {"heads": 8}, None, ["'heads'", "pattern, window, dilation, stride, block, causal, scale, "
                                                        "look_back, look_ahead"]),
]




def _same(a, b) -> bool:
    # float fields are float32: eps 1e-4 comes back as 9.99999975e-05
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    return a == b


@pytest.mark.parametrize("op", OPS)
def test_creator_fields_equal_spec(plugin_lib, op):
    creators = {c["name"]: c for c in library.plugin_info(plugin_lib)}
    creator = creators[op]
    assert (creator["version"], creator["namespace"]) == ("1", "attnx")
    want = REGISTRY[op].plugin_fields()
    assert [(f["name"], f["type"]) for f in creator["fields"]] == [(f["name"], f["type"]) for f in want]
    for got, expected in zip(creator["fields"], want):
        assert _same(got["default"], expected["default"]), (got, expected)


@pytest.mark.parametrize("op", OPS)
def test_default_fields_round_trip(plugin_lib, op):
    serialized = library.roundtrip(op, {}, path=plugin_lib)
    want = REGISTRY[op].plugin_fields()
    assert [(f["name"], f["type"]) for f in serialized] == [(f["name"], f["type"]) for f in want]
    for got, expected in zip(serialized, want):
        assert _same(got["value"], expected["default"]), (got, expected)


@pytest.mark.parametrize("op", OPS)
def test_non_default_fields_round_trip(plugin_lib, op):
    given = NON_DEFAULT[op]
    for attr in REGISTRY[op].attributes:  # values the spec itself accepts, none of them the default
        assert attr.validate(op, given[attr.name]) != attr.default
    serialized = {f["name"]: f["value"] for f in library.roundtrip(op, given, path=plugin_lib)}
    assert serialized == given
    for name, value in given.items():  # one at a time: the others keep their defaults
        serialized = {f["name"]: f["value"] for f in library.roundtrip(op, {name: value}, path=plugin_lib)}
        for f in REGISTRY[op].plugin_fields():
            assert _same(serialized[f["name"]], value if f["name"] == name else f["default"]), (name, serialized)


@pytest.mark.parametrize("op, fields, types, words", BAD_FIELDS,
                         ids=[f"{op}-{next(iter(fields))}={next(iter(fields.values()))!r}"
                              for op, fields, _, _ in BAD_FIELDS])
def test_bad_field_refused_with_message(plugin_lib, op, fields, types, words):
    with pytest.raises(PluginCreateError) as err:
        library.roundtrip(op, fields, types, path=plugin_lib)
    message = str(err.value)
    assert op in message, message
    for word in words:
        assert word in message, f"{word!r} missing from {message!r}"


@pytest.mark.parametrize("op", OPS)
def test_spec_rejects_what_the_plugin_rejects(op):
    # the plugin's ranges mirror the spec's: each bad value above is also refused by the spec
    checked = 0
    for bad_op, fields, types, _ in BAD_FIELDS:
        if bad_op != op or types or set(fields) - {a.name for a in REGISTRY[op].attributes}:
            continue
        (name, value), = fields.items()
        attr = REGISTRY[op].attr(name)
        with pytest.raises(AttributeValueError):
            attr.validate(op, value)
        checked += 1
    assert checked >= 4


# ---------------------------------------------------------------- the sparse kernel's key sets

# Includes the kernel source for the host: allowedKeys is __host__ __device__ so that this check runs
# without a GPU. Reads "N pattern window dilation stride block causal look_back look_ahead" per line and prints, per query,
# the keys the kernel would visit, in its order.
_ENUMERATE = r"""
#include "sparseAttentionKernel.cu"
#include <cstdio>
int main()
{
    long long N;
    int kind, window, dilation, stride, block, causal, back, ahead;
    while (std::scanf("%lld %d %d %d %d %d %d %d %d", &N, &kind, &window, &dilation, &stride, &block, &causal, &back,
               &ahead) == 9)
    {
        const Pattern p{kind, window, dilation, stride, block, causal, back, ahead};
        for (long long i = 0; i < N; ++i)
        {
            Progression keys[3];
            const int n = allowedKeys(i, N, p, keys);
            for (int g = 0; g < n; ++g)
                for (long long c = 0; c < keys[g].count; ++c)
                    std::printf("%lld ", (long long) (keys[g].first + c * keys[g].step));
            std::printf("\n");
        }
    }
    return 0;
}
"""

_ENUM_CASES = [(n, pattern, window, dilation, stride, block, causal, back, ahead)
               for n in (1, 2, 5, 16, 17, 40)
               for pattern in PATTERNS
               for window, dilation, stride, block in ((1, 1, 1, 1), (2, 3, 3, 4), (3, 2, 7, 8), (5, 4, 16, 64))
               for causal in (0, 1)
               for back, ahead in (((0, 0), (1, 0), (0, 1), (2, 1)) if pattern == "block" else ((0, 0),))]


@pytest.fixture(scope="module")
def enumerate_keys(tmp_path_factory):
    try:
        nvcc = build.find_nvcc()
    except BackendUnavailableError as exc:
        pytest.skip(f"nvcc is needed to compile the kernel's key enumeration for the host: {exc}")
    work = tmp_path_factory.mktemp("sparse_keys")
    (work / "enumerate.cu").write_text(_ENUMERATE)
    codegen.write_headers(work / codegen.GENERATED_DIR)  # the kernel includes its generated Params header
    exe = work / "enumerate"
    plugins = REPO / "trt_plugins"
    subprocess.run([nvcc, "-std=c++17", f"-I{plugins / 'common'}", f"-I{plugins / 'SparseAttention'}", f"-I{work}",
                    str(work / "enumerate.cu"), "-o", str(exe)], check=True, capture_output=True, timeout=300)
    return exe


def test_sparse_kernel_visits_exactly_the_allowed_keys(enumerate_keys):
    text = "".join(f"{n} {PATTERNS.index(p)} {w} {r} {t} {b} {c} {lb} {la}\n"
                   for n, p, w, r, t, b, c, lb, la in _ENUM_CASES)
    lines = subprocess.run([str(enumerate_keys)], input=text, capture_output=True, text=True, check=True,
                           timeout=120).stdout.splitlines()
    assert len(lines) == sum(case[0] for case in _ENUM_CASES)
    at = 0
    for n, pattern, window, dilation, stride, block, causal, back, ahead in _ENUM_CASES:
        pos = torch.arange(n)
        mask = allowed(pos[:, None], pos[None, :], pattern=pattern, window=window, dilation=dilation, stride=stride,
                       block=block, causal=bool(causal), look_back=back, look_ahead=ahead)
        for i in range(n):
            keys = [int(j) for j in lines[at + i].split()]
            want = torch.nonzero(mask[i]).flatten().tolist()
            assert len(keys) == len(set(keys)), ("a key visited twice", pattern, n, i, keys)
            assert sorted(keys) == want, (pattern, dict(n=n, window=window, dilation=dilation, stride=stride,
                                                        block=block, causal=causal, look_back=back,
                                                        look_ahead=ahead), i, keys, want)
        at += n
