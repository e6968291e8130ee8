"""One attnx node with its local function, in an ONNX Runtime session: the function body on its own."""

import onnx
import onnx.inliner
import onnxruntime as ort
from onnx import helper

from attnx.ops import get_spec, register_onnx_schemas


def one_node_session(op: str, attrs: dict, ranks: dict[str, int], n_outputs: int = 1,
                     dtype=onnx.TensorProto.FLOAT, opset: int = 18) -> ort.InferenceSession:
    """A session running op `op` on inputs named and ranked by `ranks` (in the spec's order)."""
    spec = get_spec(op)
    resolved = spec.resolve(attrs)
    names_in = list(ranks)
    names_out = [t.name for t in spec.outputs][:n_outputs]
    node = helper.make_node(op, names_in, names_out, domain="attnx",
                            overload=spec.overload(resolved, len(names_in), n_outputs),
                            **{a.name: a.to_onnx(resolved[a.name]) for a in spec.attributes})

    def info(name, rank):
        return helper.make_tensor_value_info(name, dtype, [f"{name}_{i}" for i in range(rank)])

    graph = helper.make_graph([node], "g", [info(n, r) for n, r in ranks.items()],
                              [helper.make_tensor_value_info(n, dtype, [f"{n}_{i}" for i in range(4)]) for n in names_out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("attnx", 1)],
                              functions=[spec.function_body(resolved, len(names_in), n_outputs, opset)],
                              ir_version=10)
    register_onnx_schemas()
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def inlined_intermediate_shapes(path, n: int) -> list[tuple]:
    """Shapes of every tensor ONNX Runtime produces for a token model inlined to standard ops,
    on input_ids [1, n]: what a real run allocates, which static shape inference cannot always tell."""
    import numpy as np

    model = onnx.inliner.inline_local_functions(onnx.load(path))
    assert not model.functions and all(node.domain == "" for node in model.graph.node)
    known = {vi.name for vi in model.graph.output}
    for node in model.graph.node:
        for out in node.output:
            if out and out not in known:
                model.graph.output.append(helper.make_empty_tensor_value_info(out))
                known.add(out)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.shape(v) for v in session.run(None, {"input_ids": np.zeros((1, n), dtype=np.int64)})]
