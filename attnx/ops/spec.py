"""The op spec: one declaration per custom op, from which everything else derives.

An `OpSpec` names the op, its tensors and its typed attributes, and carries the float64
reference (the definition), the body of its ONNX function and its TensorRT plugin identity;
each op declares its own in `attnx/ops/<op>/spec.py`. The torch.library schema, the ONNX
`OpSchema`, the exporter's translation, the plugin fields, the kernel bindings and the tests all
read the spec; none restates an attribute.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from onnx import defs

from attnx.errors import AttributeValueError
from attnx.ops.function_builder import FunctionBuilder

# ONNX attribute types and the TensorRT plugin field type the ONNX parser passes for each
# (DESIGN.md, "TensorRT form": int → int32, float → float32, string → char).
_ONNX_ATTR_TYPE = {bool: defs.OpSchema.AttrType.INT, int: defs.OpSchema.AttrType.INT,
                   float: defs.OpSchema.AttrType.FLOAT, str: defs.OpSchema.AttrType.STRING}
_PLUGIN_FIELD_TYPE = {bool: "int32", int: "int32", float: "float32", str: "char"}
_TORCH_TYPE = {bool: "bool", int: "int", float: "float", str: "str"}

FLOAT_IO_TYPES = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)")


@dataclasses.dataclass(frozen=True)
class Attr:
    """A typed op attribute with its default and the values it allows.

    `choices` restricts to a set; `low`/`high` bound a number (`low_open` makes the lower
    bound strict). bool attributes travel as ONNX int 0/1.
    """

    name: str
    type: type
    default: Any
    doc: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def allowed(self) -> str:
        """What the attribute accepts, in words, for error messages and docs."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type is bool:
            return "a bool (or 0/1)"
        parts = [self.type.__name__]
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return " ".join(parts)

    def validate(self, op: str, value: Any) -> Any:
        """Return `value` coerced to the attribute's type, or raise naming op, attribute and value."""

        def bad(why: str = "") -> AttributeValueError:
            tail = f" ({why})" if why else ""
            return AttributeValueError(
                f"{op}: attribute '{self.name}' = {value!r} is not allowed{tail}; expected {self.allowed()}")

        if self.type is bool:
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise bad()
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(f"got {type(value).__name__}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(f"got {type(value).__name__}")
            value = float(value)
            if not math.isfinite(value):
                raise bad("not finite")
        elif self.type is str:
            if isinstance(value, bytes):
                value = value.decode()
            if not isinstance(value, str):
                raise bad(f"got {type(value).__name__}")
        if self.choices is not None and value not in self.choices:
            raise bad()
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise bad()
        if self.high is not None and value > self.high:
            raise bad()
        return value

    @property
    def onnx_type(self) -> defs.OpSchema.AttrType:
        return _ONNX_ATTR_TYPE[self.type]

    @property
    def plugin_field_type(self) -> str:
        return _PLUGIN_FIELD_TYPE[self.type]

    def to_onnx(self, value: Any) -> Any:
        """The value as stored in an ONNX attribute (bool → int)."""
        return int(value) if self.type is bool else value


@dataclasses.dataclass(frozen=True)
class TensorArg:
    """An op input or output: name, shape in the `[B, H, N, D]` convention, and whether optional.

    `float32_only` marks tensors fixed at float32 (recurrent states) whatever the I/O dtype.
    """

    name: str
    shape: str
    doc: str
    optional: bool = False
    float32_only: bool = False


@dataclasses.dataclass(frozen=True)
class PluginSpec:
    """The TensorRT plugin behind an op: creator name, version and namespace."""

    name: str
    version: str = "1"
    namespace: str = "attnx"


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One custom op, complete.

    reference(*tensors, **attrs) -> tuple of float64 tensors: the definition.
    body(b, attrs, n_inputs, n_outputs) -> onnx.FunctionProto: writes the ONNX local function
    of one specialisation on the FunctionBuilder `b` (see `function_body`).
    """

    name: str
    doc: str
    inputs: tuple[TensorArg, ...]
    outputs: tuple[TensorArg, ...]
    attributes: tuple[Attr, ...]
    reference: Callable[..., tuple]
    body: Callable[..., Any]
    plugin: PluginSpec
    domain: str = "attnx"
    version: int = 1

    def attr(self, name: str) -> Attr:
        for a in self.attributes:
            if a.name == name:
                return a
        raise AttributeValueError(
            f"{self.name}: no attribute '{name}'; its attributes are "
            + ", ".join(a.name for a in self.attributes))

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate `given` attributes and fill in defaults; unknown names are an error."""
        for name in given:
            self.attr(name)
        return {a.name: a.validate(self.name, given[a.name]) if a.name in given else a.default
                for a in self.attributes}

    def overload(self, attrs: Mapping[str, Any], n_inputs: int, n_outputs: int) -> str:
        """The name of the function specialisation a node with these attributes and arities uses."""
        resolved = self.resolve(attrs)
        parts = []
        for a in self.attributes:
            value = resolved[a.name]
            if a.type is bool:
                value = int(value)
            # float attributes pass through float32 in ONNX; 6 significant digits name both the same
            parts.append(f"{a.name}={value:.6g}" if a.type is float else f"{a.name}={value}")
        parts.append(f"in={n_inputs}")
        parts.append(f"out={n_outputs}")
        return ",".join(parts)

    def function_body(self, attrs: Mapping[str, Any], n_inputs: int, n_outputs: int, opset: int):
        """The onnx.FunctionProto of one specialisation; the node's `overload` names it."""
        b = FunctionBuilder(self.domain, self.name, self.overload(attrs, n_inputs, n_outputs), opset)
        return self.body(b, attrs, n_inputs, n_outputs)

    def onnx_schema(self) -> defs.OpSchema:
        """The ONNX OpSchema, so onnx.checker and onnxscript know the node's signature."""
        opt = defs.OpSchema.FormalParameterOption

        def params(args: Sequence[TensorArg]):
            return [defs.OpSchema.FormalParameter(
                t.name, "S" if t.float32_only else "T", t.doc,
                param_option=opt.Optional if t.optional else opt.Single) for t in args]

        constraints = [("T", list(FLOAT_IO_TYPES), "I/O dtype; accumulation is float32")]
        if any(t.float32_only for t in self.inputs + self.outputs):
            constraints.append(("S", ["tensor(float)"], "float32 state"))
        return defs.OpSchema(
            self.name, self.domain, self.version, doc=self.doc,
            inputs=params(self.inputs), outputs=params(self.outputs),
            type_constraints=constraints,
            attributes=[defs.OpSchema.Attribute(a.name, a.onnx_type, a.doc, required=False)
                        for a in self.attributes])

    def torch_schema(self) -> str:
        """The torch.library schema string: tensors positional, attributes keyword-only."""
        ins = [f"Tensor{'?' if t.optional else ''} {t.name}{'=None' if t.optional else ''}"
               for t in self.inputs]
        kws = [f"{_TORCH_TYPE[a.type]} {a.name}={_torch_default(a.default)}" for a in self.attributes]
        outs = ", ".join("Tensor" for _ in self.outputs)
        if len(self.outputs) > 1:
            outs = f"({outs})"
        return f"({', '.join(ins)}, *, {', '.join(kws)}) -> {outs}"

    def plugin_fields(self) -> list[dict[str, Any]]:
        """Plugin fields as the TensorRT ONNX parser passes them: name, type, default."""
        return [{"name": a.name, "type": a.plugin_field_type, "default": a.to_onnx(a.default)}
                for a in self.attributes]


def _torch_default(value: Any) -> str:
    if isinstance(value, str):
        return repr(value).replace("'", '"')
    if isinstance(value, bool):
        return "True" if value else "False"
    return repr(value)
