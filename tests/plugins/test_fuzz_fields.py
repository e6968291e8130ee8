"""A seeded, bounded fuzz of the plugin library's field handling on the host: random field collections
(names, types, values: NaN, Inf, huge, negative, out of range, of the wrong type, unterminated strings)
through createPlugin (attnx_roundtrip), and random serialised field blobs (bit-flipped, truncated,
extended, fields retyped, resized, renamed, repeated, dropped) through deserialisation
(attnx_deserialize). No input may crash the library; every refusal returns the error createPlugin
logged; every acceptance holds values the op's spec allows, equal to the ones given, and round-trips.

The fuzz runs in a subprocess (this file as a script), so a crash fails the test naming the seed and
the case instead of killing pytest. The seed is fresh each run and printed; ATTNX_FUZZ_SEED fixes it.
Replay one case:  python tests/plugins/test_fuzz_fields.py LIB --seed S --case I
Under ASan/UBSan: DEVELOPERS.md, "Fuzzing the plugin fields".
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnx.errors import AttnxError, BackendUnavailableError
from attnx.ops import REGISTRY

SPECS = {spec.plugin.name: spec for spec in REGISTRY.values() if spec.plugin is not None}
NO_CREATOR, CREATE_FAILED, BAD_INPUT, CLONE_DIFFERS = -1000, -1001, -1002, -1003
TYPE_CODES = {"float32": 1, "int32": 5, "char": 6}  # nvinfer1::PluginFieldType
# bytes per element of each PluginFieldType, as attnx_deserialize reads them (others carry none)
ELEMENT_SIZE = {0: 2, 1: 4, 2: 8, 3: 1, 4: 2, 5: 4, 6: 1, 9: 2, 10: 8, 11: 1, 12: 1, 13: 1}
INT32 = (-2**31, 2**31 - 1)
CASES, SECONDS = 20000, 4.0  # CI's bound: whichever comes first


STATUS = {NO_CREATOR: "no creator", CREATE_FAILED: "refused", BAD_INPUT: "malformed", CLONE_DIFFERS: "clone differs"}


class Library:
    """The two host hooks through ctypes, each returning (status, text)."""

    def __init__(self, path: str):
        self.outcomes: dict[str, int] = {}  # "<hook> <outcome>" -> count
        self.lib = ctypes.CDLL(path)
        self.lib.attnx_roundtrip.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        self.lib.attnx_deserialize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                               ctypes.c_size_t]
        self.lib.attnx_roundtrip.restype = self.lib.attnx_deserialize.restype = ctypes.c_int

    def _call(self, fn, *args) -> tuple[int, str]:
        size = 1 << 12
        while True:
            buf = ctypes.create_string_buffer(size)
            rc = fn(*args, buf, size)
            if -1000 < rc < 0:  # -(bytes needed)
                size = -rc + 1
                continue
            key = f"{fn.__name__} {STATUS.get(rc, 'accepted' if rc >= 0 else rc)}"
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            return rc, buf.value.decode("utf-8", "replace")

    def roundtrip(self, creator: bytes, text: bytes) -> tuple[int, str]:
        return self._call(self.lib.attnx_roundtrip, creator, text)

    def deserialize(self, creator: bytes, blob: bytes) -> tuple[int, str]:
        return self._call(self.lib.attnx_deserialize, creator, blob, len(blob))


# ---------------------------------------------------------------- what the spec allows

def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def spec_allows(spec, name: str, value) -> bool:
    attr = next(a for a in spec.attributes if a.name == name)
    if attr.type is bool and value not in (0, 1):
        return False
    try:
        attr.validate(spec.name, bool(value) if attr.type is bool else value)
    except AttnxError:
        return False
    return True


def check_accepted(spec, out: str, given: dict) -> str | None:
    """Why an accepted plugin's serialised fields are wrong (None when right): every field of the spec
    in its order and type, allowed by the spec, equal to the value given or else the default."""
    try:
        fields = json.loads(out)["serialized"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"accepted, but its output is not the serialised-fields JSON ({exc}): {out[:300]}"
    want = [(a.name, a.plugin_field_type) for a in spec.attributes]
    if [(f["name"], f["type"]) for f in fields] != want:
        return f"accepted, but serialised {[(f['name'], f['type']) for f in fields]}; expected {want}"
    for f, attr in zip(fields, spec.attributes):
        value = f["value"]
        if not spec_allows(spec, attr.name, value):
            return f"accepted {attr.name} = {value!r}, which the spec refuses"
        expected = given.get(attr.name, attr.to_onnx(attr.default))
        if attr.type is float:
            if not math.isclose(value, _f32(expected), rel_tol=1e-6, abs_tol=1e-45):
                return f"accepted {attr.name} = {expected!r} but serialised {value!r}"
        elif value != expected:
            return f"accepted {attr.name} = {expected!r} but serialised {value!r}"
    return None


# ---------------------------------------------------------------- field text (attnx_roundtrip)

def _int_value(rng: random.Random, attr) -> tuple[str, int | None]:
    """A value as text, and the int it means when the text is canonical (else None)."""
    edges = [0, 1, -1, 2, INT32[0], INT32[1], INT32[1] + 1, INT32[0] - 1, 2**32 + 1, 2**32, 2**63 - 1, -2**63]
    for bound in (attr.low, attr.high):
        if bound is not None:
            edges += [int(bound) - 1, int(bound), int(bound) + 1]
    roll = rng.random()
    if roll < 0.55:
        v = rng.choice(edges) if rng.random() < 0.6 else rng.randint(-2**40, 2**40)
        return str(v), v
    return rng.choice(["", " 1", "1 ", "+7", "0x10", "1.5", "nan", "inf", "1e3", "--1", "9" * 30, "-" + "9" * 30,
                       "١", "0" * 50 + "3"]), None


def _float_value(rng: random.Random, attr) -> tuple[str, float | None]:
    roll = rng.random()
    if roll < 0.5:
        edges = [0.0, -0.0, 1.0, -1.0, 1e-6, 0.25, 3e38, -3e38, 1e-45, 2.0**-126, 0.5]
        for bound in (attr.low, attr.high):
            if bound is not None:
                edges += [float(bound), _f32(bound + 2**-20), _f32(bound - 2**-20)]
        v = _f32(rng.choice(edges) if rng.random() < 0.6 else rng.uniform(-2, 2) * 10 ** rng.randint(-8, 8))
        # strtof reports a subnormal result as out of range: the harness refuses it, rightly or not
        return repr(v), (v if v == 0 or abs(v) >= 2.0**-126 else None)
    return rng.choice(["nan", "-nan", "inf", "-inf", "NaN", "infinity", "1e39", "-1e39", "1e-50", "", "abc",
                       "0x1p-3", "1e", ".", "1,5", " 0.5", "0.5 ", "1" * 400]), None


def _char_value(rng: random.Random, attr) -> tuple[str, str | None]:
    choices = list(attr.choices or ["x"])
    roll = rng.random()
    if roll < 0.5:
        v = rng.choice(choices)
        return v, v
    return rng.choice([
        "", rng.choice(choices).upper(), rng.choice(choices) + " ", " " + rng.choice(choices),
        rng.choice(choices)[:-1], rng.choice(choices) * 2, "é" + rng.choice(choices), "x" * rng.randint(1, 6000),
        "".join(chr(rng.randint(0x20, 0x7e)) for _ in range(rng.randint(1, 40))),
        "".join(chr(rng.randint(0x80, 0x2fff)) for _ in range(rng.randint(1, 10))),
    ]), None


VALUES = {"int32": _int_value, "float32": _float_value, "char": _char_value}


def text_case(rng: random.Random) -> dict:
    """One random field collection as attnx_roundtrip's text, and what a correct library must do with it."""
    creator = rng.choice(list(SPECS)) if rng.random() < 0.97 else rng.choice(["", "linearattention", "X" * 300])
    spec = SPECS.get(creator) or rng.choice(list(SPECS.values()))
    # given: each name's last value (the one a plugin keeps), None where that text is not canonical
    lines, given, canonical, out_of_int32 = [], {}, True, []
    count = rng.choice([0, 1, 1, 2, 2, 3, 4, 6]) if rng.random() < 0.97 else rng.randint(60, 70)
    all_names = [a.name for s in SPECS.values() for a in s.attributes]
    for _ in range(count):
        attr = rng.choice(spec.attributes)
        name = attr.name if rng.random() < 0.85 else rng.choice(all_names + ["", "Causal", "x" * 300, "é", "a b"])
        type_ = attr.plugin_field_type if rng.random() < 0.85 else \
            rng.choice(["int32", "int64", "float32", "float64", "char", "bogus", "", "INT32"])
        text, value = VALUES.get(type_, rng.choice(list(VALUES.values())))(rng, attr)
        if rng.random() < 0.02:
            lines.append(rng.choice(["novalue", "a\tb", "\t\t", "x\tint32"]))
            canonical = False
            continue
        lines.append(f"{name}\t{type_}\t{text}")
        known = next((a for a in spec.attributes if a.name == name), None)
        if type_ == "int32" and value is not None and not INT32[0] <= value <= INT32[1]:
            out_of_int32.append(name)
        if known is None or type_ != known.plugin_field_type:
            canonical = False
        else:
            given[name] = value
            canonical = canonical and value is not None
    valid = canonical and creator in SPECS and count <= 64 and not out_of_int32 and \
        all(spec_allows(spec, n, v) for n, v in given.items())
    return {"kind": "text", "creator": creator, "text": "\n".join(lines), "given": given, "valid": valid,
            "out_of_int32": out_of_int32}


def run_text_case(lib: Library, case: dict) -> str | None:
    rc, out = lib.roundtrip(case["creator"].encode(), case["text"].encode())
    spec = SPECS.get(case["creator"])
    if rc == NO_CREATOR:
        return None if spec is None else f"status NO_CREATOR for the creator {case['creator']!r}: {out}"
    if spec is None:
        return f"status {rc} for the unknown creator {case['creator']!r}; expected NO_CREATOR"
    if rc in (CREATE_FAILED, BAD_INPUT):
        if not out or out.startswith("createPlugin returned null without logging"):
            return f"refused (status {rc}) without an error message: {out!r}"
        if case["valid"]:
            return f"refused a valid collection (status {rc}): {out}"
        return None
    if rc < 0:
        return f"status {rc}: {out}"
    if case["out_of_int32"]:
        return f"accepted {case['out_of_int32']} outside int32 (wrapped?): {out[:300]}"
    refused = {n: v for n, v in case["given"].items() if v is not None and not spec_allows(spec, n, v)}
    if refused:
        return f"accepted values the spec refuses: {refused}"
    if case["valid"]:
        return check_accepted(spec, out, case["given"])
    # text that is not canonical (" 1", "+7"): what it accepted must still be what the spec allows
    return check_accepted(spec, out, _serialised_values(out))


def _serialised_values(out: str) -> dict:
    try:
        return {f["name"]: f["value"] for f in json.loads(out)["serialized"]}
    except (ValueError, KeyError, TypeError):
        return {}


# ---------------------------------------------------------------- blobs (attnx_deserialize)

def encode(fields: list[tuple[bytes, int, int, bytes]]) -> bytes:
    """The blob attnx_deserialize reads from (name, type code, length, data) tuples."""
    out = [struct.pack("<i", len(fields))]
    for name, type_, length, data in fields:
        out += [struct.pack("<I", len(name)), name, struct.pack("<ii", type_, length), data]
    return b"".join(out)


def serialised_to_fields(serialized: list[dict]) -> list[tuple[bytes, int, int, bytes]]:
    """The plugin's getFieldsToSerialize() (as JSON) as blob fields: strings with their terminator."""
    fields = []
    for f in serialized:
        if f["type"] == "int32":
            fields.append((f["name"].encode(), 5, 1, struct.pack("<i", f["value"])))
        elif f["type"] == "float32":
            fields.append((f["name"].encode(), 1, 1, struct.pack("<f", f["value"])))
        else:
            data = f["value"].encode() + b"\0"
            fields.append((f["name"].encode(), 6, len(data), data))
    return fields


def decode_given(spec, fields) -> dict | None:
    """The values a correct createPlugin takes from blob fields (the last of a name wins), or None when
    the fields are not all well-formed fields of the spec."""
    given = {}
    for name, type_, length, data in fields:
        attr = next((a for a in spec.attributes if a.name.encode() == name), None)
        if attr is None or TYPE_CODES[attr.plugin_field_type] != type_:
            return None
        if type_ == 6:
            raw = data[:max(length, 0)].split(b"\0")[0]
            try:
                given[attr.name] = raw.decode()
            except UnicodeDecodeError:
                return None
        elif length != 1:
            return None
        else:
            given[attr.name] = struct.unpack("<i" if type_ == 5 else "<f", data)[0]
    return given


def _mutate_fields(rng: random.Random, fields: list) -> list:
    fields = list(fields)
    for _ in range(rng.randint(1, 3)):
        if not fields:
            break
        i = rng.randrange(len(fields))
        name, type_, length, data = fields[i]
        roll = rng.random()
        if roll < 0.2:  # retyped, with as many bytes as its length takes in the new type
            type_ = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, -1, 14, 2**31 - 1])
            data = (data * 8)[:max(length, 0) * ELEMENT_SIZE.get(type_, 0)]
        elif roll < 0.35:  # another length, with data of that length
            length = rng.choice([0, -1, 2, 3, 17, -2**31, 4096])
            data = rng.randbytes(max(length, 0) * ELEMENT_SIZE.get(type_, 0))
        elif roll < 0.5:  # a string without its terminator, or with bytes after it
            data = rng.choice([data.rstrip(b"\0"), data + b"junk", b"\xff\xfe", b"\0" + data])
            length, type_ = len(data), 6
        elif roll < 0.6:  # a value of the right type but anything in it
            data = rng.randbytes(len(data))
            if type_ == 1 and rng.random() < 0.5:
                data = struct.pack("<f", rng.choice([math.nan, math.inf, -math.inf, 3.4e38, -0.0, 1e-45]))
        elif roll < 0.7:
            name = rng.choice([b"", b"x" * 5000, name.upper(), name + b"\0tail", b"\xff"])
        elif roll < 0.8:
            fields.append(fields[i])
            continue
        elif roll < 0.9:
            del fields[i]
            continue
        else:
            rng.shuffle(fields)
            continue
        fields[i] = (name, type_, length, data)
    return fields


def _mutate_bytes(rng: random.Random, blob: bytes) -> bytes:
    b = bytearray(blob)
    roll = rng.random()
    if roll < 0.4:
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif roll < 0.7:
        del b[rng.randrange(len(b) + 1):]
    elif roll < 0.85:
        b += rng.randbytes(rng.randint(1, 16))
    else:
        pos = rng.randrange(len(b) + 1)
        b[pos:pos + 4] = struct.pack("<i", rng.choice([-1, 0, 64, 65, 2**31 - 1, -2**31, 2**24]))
    return bytes(b)


def blob_case(rng: random.Random, lib: Library) -> dict:
    creator = rng.choice(list(SPECS))
    spec = SPECS[creator]
    # a valid plugin to start from: the defaults, with one field changed to a valid value
    rc, out = lib.roundtrip(creator.encode(), b"")
    assert rc >= 0, f"{creator}: the defaults were refused: {out}"
    base = serialised_to_fields(json.loads(out)["serialized"])
    if rng.random() < 0.1:
        return {"kind": "blob", "creator": creator, "blob": encode(base), "fields": base, "exact": True}
    fields = _mutate_fields(rng, base) if rng.random() < 0.6 else base
    if rng.random() < 0.5 or fields == base:
        return {"kind": "blob", "creator": creator, "blob": _mutate_bytes(rng, encode(fields)), "fields": None}
    return {"kind": "blob", "creator": creator, "blob": encode(fields), "fields": fields}


def run_blob_case(lib: Library, case: dict) -> str | None:
    spec = SPECS[case["creator"]]
    rc, out = lib.deserialize(case["creator"].encode(), case["blob"])
    if rc in (CREATE_FAILED, BAD_INPUT):
        if not out or out.startswith("createPlugin returned null without logging"):
            return f"refused (status {rc}) without an error message: {out!r}"
        if case.get("exact"):
            return f"refused the plugin's own serialised fields (status {rc}): {out}"
        return None
    if rc < 0:
        return f"status {rc}: {out}"
    given = decode_given(spec, case["fields"]) if case["fields"] is not None else None
    if given is not None and any(not spec_allows(spec, n, v) for n, v in given.items()):
        return f"accepted fields the spec refuses: {given}"
    why = check_accepted(spec, out, given if given is not None else _serialised_values(out))
    if why:
        return why
    # what it accepted, serialised and deserialised again, is the same plugin
    again = encode(serialised_to_fields(json.loads(out)["serialized"]))
    rc2, out2 = lib.deserialize(case["creator"].encode(), again)
    if rc2 < 0 or json.loads(out2) != json.loads(out):
        return f"accepted, but its serialised fields do not deserialise to the same plugin: {out} then {rc2} {out2}"
    return None


# ---------------------------------------------------------------- the driver (run as a script)

def make_case(seed: int, index: int, lib: Library) -> dict:
    rng = random.Random(seed * 1_000_003 + index)
    return text_case(rng) if index % 2 == 0 else blob_case(rng, lib)


def fuzz(lib_path: str, seed: int, cases: int, seconds: float, trace: str | None) -> int:
    lib = Library(lib_path)
    fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if trace else None
    start, failures, counts = time.monotonic(), 0, {"text": 0, "blob": 0}
    index = 0
    for index in range(cases):
        if time.monotonic() - start > seconds:
            break
        if fd is not None:  # the case about to run, for a crash report
            os.pwrite(fd, f"{index:>12}".encode(), 0)
        case = make_case(seed, index, lib)
        why = run_text_case(lib, case) if case["kind"] == "text" else run_blob_case(lib, case)
        counts[case["kind"]] += 1
        if why:
            failures += 1
            if failures <= 5:
                shown = {k: (v[:200] if isinstance(v, (str, bytes)) else v) for k, v in case.items() if k != "fields"}
                print(f"FAIL seed {seed} case {index}: {why}\n    input: {shown!r}", flush=True)
    print(json.dumps({"seed": seed, "cases": counts, "failures": failures, "outcomes": lib.outcomes,
                      "seconds": round(time.monotonic() - start, 2)}), flush=True)
    return 1 if failures else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lib", help="libattnx_plugins.so")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=CASES)
    p.add_argument("--seconds", type=float, default=SECONDS)
    p.add_argument("--case", type=int, help="run only case I of the seed, printing its input")
    p.add_argument("--trace", help="file where the index of the running case is kept")
    args = p.parse_args(argv)
    if args.case is not None:
        lib = Library(args.lib)
        case = make_case(args.seed, args.case, lib)
        print(repr({k: v for k, v in case.items()}), flush=True)
        why = run_text_case(lib, case) if case["kind"] == "text" else run_blob_case(lib, case)
        print(why or "ok")
        return 1 if why else 0
    return fuzz(args.lib, args.seed, args.cases, args.seconds, args.trace)


# ---------------------------------------------------------------- the tests

def test_int32_values_outside_int32_are_refused_not_wrapped(plugin_lib):
    from attnx.plugins import library

    # 2**32 + 1 wrapped to 1 (causal on); 2**31 wrapped to INT32_MIN
    for field, value in [("causal", 2**32 + 1), ("fixed_length", 2**31), ("fixed_length", -2**31 - 1)]:
        try:
            got = library.roundtrip("ReluSquaredAttention", {field: value}, path=plugin_lib)
        except library.PluginLibraryError as exc:
            assert f"value '{value}' is outside int32 [-2147483648, 2147483647]" in str(exc), str(exc)
        else:
            raise AssertionError(f"{field} = {value} was accepted as {got}")
    got = library.roundtrip("ReluSquaredAttention", {"fixed_length": 2**31 - 1}, path=plugin_lib)
    assert {f["name"]: f["value"] for f in got}["fixed_length"] == 2147483647


def test_a_blob_of_the_plugins_own_fields_deserialises_and_a_cut_one_is_refused(plugin_lib):
    lib = Library(str(plugin_lib))
    rc, out = lib.roundtrip(b"SparseAttention", b"pattern\tchar\tdilated\nwindow\tint32\t7")
    assert rc >= 0, out
    blob = encode(serialised_to_fields(json.loads(out)["serialized"]))
    rc, again = lib.deserialize(b"SparseAttention", blob)
    assert rc >= 0 and json.loads(again) == json.loads(out), again
    rc, message = lib.deserialize(b"SparseAttention", blob[:-3])
    assert rc == BAD_INPUT and f"blob of {len(blob) - 3} bytes ends at byte" in message, (rc, message)
    rc, message = lib.deserialize(b"SparseAttention", blob + b"\0")
    assert rc == BAD_INPUT and "expected nothing after them" in message, (rc, message)
    # a string field without its terminator, exactly as long as its bytes: read no further than them
    fields = [(b"pattern", 6, 5, b"block")]
    rc, out = lib.deserialize(b"SparseAttention", encode(fields))
    assert rc >= 0 and {f["name"]: f["value"] for f in json.loads(out)["serialized"]}["pattern"] == "block", out
    rc, message = lib.deserialize(b"SparseAttention", encode([(b"window", 5, 2, b"\1\0\0\0\2\0\0\0")]))
    assert rc == CREATE_FAILED and "field 'window' holds 2 values; expected one int32" in message, message


def test_fuzz_plugin_fields_and_blobs(plugin_lib, tmp_path):
    seed = int(os.environ.get("ATTNX_FUZZ_SEED") or random.SystemRandom().randrange(2**31))
    print(f"fuzz seed: {seed} (ATTNX_FUZZ_SEED={seed} repeats this run)")
    trace = tmp_path / "case"
    proc = subprocess.run([sys.executable, __file__, str(plugin_lib), "--seed", str(seed), "--trace", str(trace)],
                          capture_output=True, text=True, errors="replace", timeout=120)
    if proc.returncode < 0 or proc.returncode not in (0, 1):
        index = trace.read_text().strip() if trace.exists() else "?"
        raise AssertionError(f"the fuzz crashed (status {proc.returncode}) at seed {seed} case {index}; replay: "
                             f"python {__file__} {plugin_lib} --seed {seed} --case {index}\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    print(summary)
    assert proc.returncode == 0, f"seed {seed}:\n{proc.stdout[-6000:]}"
    # bounded but not empty: both kinds of input ran in numbers, and each hook both refused and accepted
    assert summary["cases"]["text"] >= 500 and summary["cases"]["blob"] >= 500, summary
    for outcome in ("attnx_roundtrip accepted", "attnx_roundtrip refused", "attnx_roundtrip malformed",
                    "attnx_deserialize accepted", "attnx_deserialize refused", "attnx_deserialize malformed"):
        assert summary["outcomes"].get(outcome, 0) >= 20, (outcome, summary)


def test_fuzz_under_sanitizers(tmp_path):
    """The same fuzz on a library whose host C++ is built with ASan and UBSan (ATTNX_SANITIZE=ON), for
    one architecture into build/trt_plugins-asan: opt-in (ATTNX_SANITIZE_TESTS=1), as it compiles every
    kernel once more."""
    if os.environ.get("ATTNX_SANITIZE_TESTS") != "1":
        pytest.skip("the sanitizer build compiles every kernel once more; ATTNX_SANITIZE_TESTS=1 runs it")
    from attnx.plugins import build, headers

    try:
        cmake, nvcc = build.find_cmake(), build.find_nvcc()
    except BackendUnavailableError as exc:
        pytest.skip(f"the sanitizer build cannot be built on this machine: {exc}")
    runtimes = [subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
                for lib in ("libasan.so", "libubsan.so")]
    if not all(Path(r).is_absolute() and Path(r).exists() for r in runtimes):
        pytest.skip(f"gcc names no ASan/UBSan runtime to preload (found {runtimes})")
    repo = Path(__file__).resolve().parents[2]
    out = repo / "build" / "trt_plugins-asan"
    for cmd in ([cmake, "-S", str(repo / "trt_plugins"), "-B", str(out), "-DATTNX_SANITIZE=ON",
                 "-DCMAKE_CUDA_ARCHITECTURES=87", f"-DCMAKE_CUDA_COMPILER={nvcc}",
                 f"-DTRT_INCLUDE_DIR={headers.include_dir(log=print)}", f"-DATTNX_PYTHON={sys.executable}"],
                [cmake, "--build", str(out), "-j", str(os.cpu_count() or 2)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    seed = int(os.environ.get("ATTNX_FUZZ_SEED") or random.SystemRandom().randrange(2**31))
    print(f"fuzz seed under ASan/UBSan: {seed}")
    env = {**os.environ, "LD_PRELOAD": " ".join(runtimes), "ASAN_OPTIONS": "detect_leaks=0",
           "UBSAN_OPTIONS": "print_stacktrace=1"}
    proc = subprocess.run([sys.executable, __file__, str(out / "libattnx_plugins.so"), "--seed", str(seed),
                           "--seconds", "30"], capture_output=True, text=True, errors="replace", env=env, timeout=300)
    reports = [line for line in proc.stderr.splitlines() if "Sanitizer" in line or "runtime error" in line]
    assert proc.returncode == 0 and not reports, \
        f"seed {seed}: status {proc.returncode}\n{proc.stdout[-3000:]}\n{chr(10).join(reports[:20])}\n{proc.stderr[-3000:]}"


if __name__ == "__main__":
    sys.exit(main())
