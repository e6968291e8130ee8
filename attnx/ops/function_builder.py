"""A small helper for writing ONNX function bodies as straight-line code.

`b.MatMul(x, y)` appends a node and returns its output name, so a body reads like the
algorithm it implements. The result is an `onnx.FunctionProto` built with `onnx.helper`.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper


class FunctionBuilder:
    def __init__(self, domain: str, name: str, overload: str, opset: int):
        self.domain, self.name, self.overload, self.opset = domain, name, overload, opset
        self.nodes: list[onnx.NodeProto] = []
        self._ids = itertools.count()

    def _fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._ids)}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        outs = [self._fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def __getattr__(self, op_type: str):
        if not op_type[:1].isupper():
            raise AttributeError(op_type)
        return lambda *inputs, **attrs: self.op(op_type, *inputs, **attrs)

    def const(self, value, dtype=np.int64) -> str:
        out = self._fresh("const")
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype), out)
        self.nodes.append(helper.make_node("Constant", [], [out], value=tensor))
        return out

    def rename(self, src: str, dst: str) -> None:
        """Bind a computed value to a function output name."""
        self.nodes.append(helper.make_node("Identity", [src], [dst]))

    def build(self, inputs: list[str], outputs: list[str]) -> onnx.FunctionProto:
        return helper.make_function(
            self.domain, self.name, inputs, outputs, self.nodes,
            [helper.make_opsetid("", self.opset)], [], overload=self.overload)
