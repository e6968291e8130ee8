"""The feature maps LinearAttention knows (its `feature_map` attribute), found in a graph.

φ(x) = elu(x) + 1 is exported as Add(Elu(x, alpha=1), 1); relu as Relu(x). Anything else
applied to q and k stays in the graph and the node takes φ(x) as it is (`identity`).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from attnx.surgeon.graph import producer, scalar_constant


def feature_map_of(tensor: gs.Tensor) -> tuple[str, gs.Tensor]:
    """(name, x) with tensor = φ_name(x); ("identity", tensor) when no known map computes it."""
    node = producer(tensor)
    if node is None:
        return "identity", tensor
    if node.op == "Relu":
        return "relu", node.inputs[0]
    if node.op == "Add":
        for elu_in, one in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
            elu = producer(elu_in)
            if (elu is not None and elu.op == "Elu" and float(elu.attrs.get("alpha", 1.0)) == 1.0
                    and scalar_constant(one) == 1.0):
                return "elu", elu.inputs[0]
    return "identity", tensor


def shared_feature_map(q: gs.Tensor, k: gs.Tensor) -> tuple[str, gs.Tensor, gs.Tensor]:
    """(name, q_in, k_in): the map both q and k go through, or identity on q and k themselves."""
    fq, q_in = feature_map_of(q)
    fk, k_in = feature_map_of(k)
    if fq == fk and fq != "identity":
        return fq, q_in, k_in
    return "identity", q, k
