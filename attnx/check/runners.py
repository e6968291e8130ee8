"""Polygraphy runners: the eager model in float64, the reference every backend is held to."""

from __future__ import annotations

import copy
import time
from collections import OrderedDict

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from attnx.errors import InputError


class EagerFloat64Runner(BaseRunner):
    """Runs a torch module in float64 on the CPU; outputs named after the ONNX graph's outputs.

    module: torch.nn.Module taking the inputs in `input_meta` order.
    input_meta: {name: (numpy dtype, shape)} as the ONNX file declares them.
    """

    def __init__(self, module: torch.nn.Module, input_meta: dict[str, tuple], output_names: list[str],
                 name: str = "eager-float64"):
        super().__init__(name=name)
        self._module, self.input_meta, self.output_names = module, input_meta, output_names
        self.input_names = list(input_meta)

    def activate_impl(self):
        self.module64 = copy.deepcopy(self._module).double().eval()

    def get_input_metadata_impl(self):
        meta = TensorMetadata()
        for name, (dtype, shape) in self.input_meta.items():
            meta.add(name, dtype=dtype, shape=shape)
        return meta

    def infer_impl(self, feed_dict):
        args = []
        for name in self.input_names:
            t = torch.from_numpy(np.asarray(feed_dict[name]))
            args.append(t.double() if t.is_floating_point() else t)
        start = time.perf_counter()
        try:
            with torch.no_grad():
                out = self.module64(*args)
        except Exception as exc:  # the model's own limits: a positional table, a vocabulary, a shape
            shapes = ", ".join(f"{n} {list(a.shape)}" for n, a in zip(self.input_names, args))
            raise InputError(f"expected inputs the eager model accepts, found that it raises on {shapes}: "
                             f"{type(exc).__name__}: {exc}") from exc
        self.inference_time = time.perf_counter() - start
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != len(self.output_names) or not all(isinstance(o, torch.Tensor) for o in outs):
            raise InputError(f"expected the eager model to return {len(self.output_names)} tensor(s) like the ONNX "
                             f"graph ({', '.join(self.output_names)}), found {len(outs)} of "
                             f"{', '.join(sorted({type(o).__name__ for o in outs}))}")
        return OrderedDict((n, o.detach().double().numpy()) for n, o in zip(self.output_names, outs))

    def deactivate_impl(self):
        del self.module64
