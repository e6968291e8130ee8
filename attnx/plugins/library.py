"""Finding and reading the plugin library: path resolution, creator info and field round trips.

Everything here runs on the host through ctypes: creating a plugin object and reading its
fields needs neither a GPU nor TensorRT's runtime.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any, Mapping

from attnx.errors import AttnxError
from attnx.plugins.build import CHECKOUT_ROOT, LIBRARY_NAME, default_build_dir

ENV_VAR = "ATTNX_PLUGIN_LIB"

# attnx_roundtrip's status codes (trt_plugins/api/registration.cpp)
_NO_CREATOR, _CREATE_FAILED, _BAD_INPUT, _CLONE_DIFFERS = -1000, -1001, -1002, -1003


class PluginLibraryError(AttnxError):
    """The plugin library is missing, does not load, or answered with an error."""


class PluginCreateError(PluginLibraryError):
    """createPlugin returned null; the message is the error the plugin logged."""


def default_library_path() -> Path:
    """Where `attnx plugins build` puts the library by default (build.default_build_dir)."""
    return default_build_dir() / LIBRARY_NAME


def default_library_text() -> str:
    """The default library's path as help texts show it: relative to the checkout, else in full."""
    path = default_library_path()
    return str(path.relative_to(CHECKOUT_ROOT)) if CHECKOUT_ROOT is not None else str(path)


def library_path(path: str | Path | None = None) -> Path:
    """The library: `path`, else $ATTNX_PLUGIN_LIB, else the default build folder; it must exist."""
    if path is None and not os.environ.get(ENV_VAR):
        p = default_library_path()
        if not p.is_file():
            raise PluginLibraryError(f"no plugin library at {p} (the default build folder, as neither --plugins/--lib "
                                     f"nor ${ENV_VAR} names one); `attnx plugins build` builds it there")
        return p
    p, source = (Path(path), "given path") if path is not None else (Path(os.environ[ENV_VAR]), f"${ENV_VAR}")
    if not p.is_file():
        raise PluginLibraryError(f"no plugin library at {p} ({source}); expected a built {LIBRARY_NAME}: "
                                 f"`attnx plugins build` writes one to {default_library_path()}")
    return p


_LOADED: dict[Path, ctypes.CDLL] = {}


def load(path: str | Path | None = None) -> ctypes.CDLL:
    p = library_path(path).resolve()
    if p not in _LOADED:
        try:
            lib = ctypes.CDLL(str(p))
        except OSError as exc:
            raise PluginLibraryError(f"{p} does not load: {exc}") from None
        missing = [s for s in ("attnx_describe_creators", "attnx_roundtrip") if not hasattr(lib, s)]
        if missing:
            raise PluginLibraryError(f"{p}: expected the attnx plugin library, found a shared library that does "
                                     f"not export {', '.join(missing)}")
        lib.attnx_describe_creators.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.attnx_describe_creators.restype = ctypes.c_int
        lib.attnx_roundtrip.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.attnx_roundtrip.restype = ctypes.c_int
        _LOADED[p] = lib
    return _LOADED[p]


def _call_with_buffer(fn, *args) -> tuple[int, str]:
    size = 1 << 14
    while True:
        buf = ctypes.create_string_buffer(size)
        rc = fn(*args, buf, size)
        # -(bytes needed) when the buffer is too small; status codes are <= -1000
        if -1000 < rc < 0 and -rc > size:
            size = -rc + 1
            continue
        return rc, buf.value.decode()


def plugin_info(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The creators as the library reports them: name, version, namespace, fields (getFieldNames)."""
    lib = load(path)
    rc, text = _call_with_buffer(lib.attnx_describe_creators)
    if rc < 0:
        raise PluginLibraryError(f"attnx_describe_creators failed with status {rc}")
    return json.loads(text)


def _field_line(name: str, value: Any, type_: str | None) -> str:
    if type_ is None:
        type_ = "char" if isinstance(value, str) else "float32" if isinstance(value, float) else "int32"
    if isinstance(value, bool):
        value = int(value)
    text = repr(value) if isinstance(value, float) else str(value)
    if any(c in text + name for c in "\t\n"):
        raise PluginLibraryError(f"field {name!r}: tabs and newlines cannot be passed ({text!r})")
    return f"{name}\t{type_}\t{text}"


def roundtrip(creator: str, fields: Mapping[str, Any], types: Mapping[str, str] | None = None,
              path: str | Path | None = None) -> list[dict[str, Any]]:
    """createPlugin with `fields` (type from the value: str → char, float → float32, int/bool → int32,
    or as `types` names it), then again from its getFieldsToSerialize(); returns the serialised fields
    [{"name", "type", "value"}]. PluginCreateError carries the error createPlugin logged."""
    lib = load(path)
    types = dict(types or {})
    text = "\n".join(_field_line(n, v, types.get(n)) for n, v in fields.items())
    rc, out = _call_with_buffer(lib.attnx_roundtrip, creator.encode(), text.encode())
    if rc == _CREATE_FAILED:
        raise PluginCreateError(f"{creator}: createPlugin returned null: {out}")
    if rc in (_NO_CREATOR, _BAD_INPUT, _CLONE_DIFFERS) or rc < 0:
        raise PluginLibraryError(f"{creator}: round trip failed (status {rc}): {out}")
    result = json.loads(out)
    return result["serialized"]
