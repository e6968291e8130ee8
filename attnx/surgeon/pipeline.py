"""`optimize_model`: the passes in their fixed order, then the target form.

Order (each pass sees the graph the previous one left):
  1. fuse-rotary              x·cos + rotate(x)·sin → ONNX RotaryEmbedding (opset 23)
  2. fuse-sparse-attention    softmax(s·QKᵀ under a band/block mask)·V → SparseAttention
  3. fuse-softmax-attention   softmax(s·QKᵀ [+ causal mask])·V → ONNX Attention (opset 23)
  4. fuse-performer-features  FAVOR+ exp(Wx − ‖x‖²/2 − c)/√m + eps → PerformerFeatures
  5. fuse-relu-squared-attention  relu(s·QKᵀ [/n])² [/n] [causal]·V → ReluSquaredAttention
  6. fuse-mixed-chunk-attention   ReluSquaredAttention over chunks + linear attention across
                              chunks (FLASH) → MixedChunkAttention (starts from 5's node)
  7. reassociate              (QKᵀ)V → Q(KᵀV) for softmax-free attention; causal → LinearAttention
  8. fuse-linear-attention    Q(KᵀV) with its feature map and normaliser, and the causal CumSum
                              form → LinearAttention (runs after 7, which produces the Q(KᵀV) form)
Specific fusions come before general ones: a band-masked softmax is SparseAttention's before
the softmax fusion sees it, FAVOR+ features are one node before reassociation turns the
attention they feed into LinearAttention(identity), relu² is claimed before
reassociation (which would leave it alone: relu² does not commute with ·V), and FLASH's
across-chunk part is read before reassociation or the linear fusion can claim pieces of it. After every pass the graph is
cleaned up and sorted, local functions are attached and shapes inferred again; the
target form is checked by onnx.checker.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

from attnx.errors import AttnxError, OnnxFileError
from attnx.exporters.functions import attach_local_functions, model_opset
from attnx.ops import DOMAIN, register_onnx_schemas
from attnx.surgeon.attnx_node import verify_attnx_nodes
from attnx.surgeon.attention_pattern import find_quadratic
from attnx.surgeon.framework import Pass, PassReport
from attnx.surgeon.graph import import_graph
from attnx.surgeon.upgrade import upgrade_opset
from attnx.surgeon.guard import BATCH, check_regions
from attnx.surgeon.fuse_linear_attention import FuseLinearAttention
from attnx.surgeon.fuse_mixed_chunk_attention import FuseMixedChunkAttention
from attnx.surgeon.fuse_performer_features import FusePerformerFeatures
from attnx.surgeon.fuse_relu_squared_attention import FuseReluSquaredAttention
from attnx.surgeon.fuse_rotary import FuseRotary
from attnx.surgeon.fuse_softmax_attention import FuseSoftmaxAttention
from attnx.surgeon.fuse_sparse_attention import FuseSparseAttention
from attnx.surgeon.names import PASS_ORDER
from attnx.surgeon.reassociate import Reassociate
from attnx.surgeon.retarget import TARGETS, retarget

_BY_NAME: dict[str, type[Pass]] = {cls.name: cls for cls in (
    FuseRotary, FuseSparseAttention, FuseSoftmaxAttention, FusePerformerFeatures, FuseReluSquaredAttention,
    FuseMixedChunkAttention, Reassociate, FuseLinearAttention)}
if set(_BY_NAME) != set(PASS_ORDER):  # the order is names.py's, so that the CLI lists it without onnx
    raise ImportError(f"attnx.surgeon.names.PASS_ORDER {sorted(PASS_ORDER)} must name the passes "
                      f"{sorted(_BY_NAME)}")
PASSES: dict[str, type[Pass]] = {name: _BY_NAME[name] for name in PASS_ORDER}


def _strip_attnx_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """attnx local functions are regenerated from the specs; graphsurgeon need not carry them."""
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    for node in model.graph.node:
        node.overload = ""
    return model


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises its own InferenceError and a few others
        raise OnnxFileError(f"ONNX shape inference failed: {exc}") from exc


def _apply(model: onnx.ModelProto, pass_: Pass, opset: int, skip: dict[str, str]):
    """The pass run once on (a fresh import of) `model`, already inferred and stripped."""
    graph = import_graph(model)
    report = pass_.run(graph, opset, skip)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    return out, report


def _undone(report, failed: dict[str, str]):
    """`report` with every rewrite turned back: the pass's output is not kept."""
    for entry in report.details:
        if entry.pop("rewritten", False):
            entry.pop("change", None)
            entry["checks"]["numeric_guard"] = False
            entry["why"] = "numeric_guard: " + failed.get(entry["at"], "another rewrite of this pass failed the "
                                                                    "numeric guard; the pass is not kept")
        entry["rewritten"] = False
    report.rewritten, report.regions = 0, []
    return report


def _run_pass(model: onnx.ModelProto, pass_: Pass, guard: bool = True):
    """The pass on `model`, each rewrite checked by the numeric guard: a rewrite the guard finds wrong (or
    cannot run) is undone by running the pass again from `model` with its anchor skipped, until every
    rewrite kept agrees. Each round skips at least one more anchor, so the loop ends."""
    inferred = _infer(model)
    before = onnx.ModelProto()
    before.CopyFrom(inferred)
    stripped = _strip_attnx_functions(inferred)
    functions = [f for f in model.functions if f.domain != DOMAIN]
    opset, skip = model_opset(model), {}
    while True:
        out, report = _apply(stripped, pass_, opset, skip)
        out.functions.extend(functions)
        out = attach_local_functions(out)
        if not guard or not report.regions:
            return out, report
        verdicts = check_regions(before, out, report.regions)
        failed = {v.anchor: v.why for v in verdicts if not v.ok}
        if failed and not set(failed) <= set(skip):
            skip.update(failed)
            continue
        if failed:  # a skipped anchor came back rewritten: keep nothing of this pass
            return model, _undone(report, failed)
        by_anchor = {v.anchor: v for v in verdicts}
        for entry in report.details:
            if entry.get("rewritten") and entry["at"] in by_anchor:
                v = by_anchor[entry["at"]]
                entry["guard"] = {"max_error": v.max_error, "errors": v.errors, "lengths": list(v.lengths), "batch": BATCH}
                entry["change"] += f" [numeric guard: {v.why}]"
        return out, report


def select_passes(names: list[str] | None) -> list[Pass]:
    """The passes to run, always in pipeline order; unknown names list the known ones."""
    if names is None:
        return [cls() for cls in PASSES.values()]
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise AttnxError(f"unknown pass(es) {', '.join(unknown)}; the passes are {', '.join(PASSES)}")
    return [cls() for name, cls in PASSES.items() if name in names]


def optimize_model(model: onnx.ModelProto, target: str = "ort", passes: list[str] | None = None,
                   trt_version: tuple[int, int] | None = None):
    """Run the passes, then convert to `target`: (ModelProto, Reports: the passes' PassReports, and
    `.left_alone`, every attention region left unfused with why); `trt_version` is the TensorRT
    whose parser the `trt` form is for (default: attnx.surgeon.trt_versions.default_version()).

    The input is not modified. `passes` None runs them all. An attnx node whose attributes are
    missing, invalid or disagree with its function overload is refused first (OnnxFileError):
    the passes rebuild every node from its attributes.
    """
    if target not in TARGETS:
        raise AttnxError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if not isinstance(model, onnx.ModelProto):
        raise OnnxFileError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    register_onnx_schemas()
    verify_attnx_nodes(model)
    out, reports = _run_passes(model, passes)
    if any(not d.get("rewritten") and str(d.get("why", "")).startswith("opset_supports_op")
           for r in reports for d in r.details):
        # a candidate only the opset held back: convert (ONNX Attention / RotaryEmbedding need 23) and run again
        upgraded, note = upgrade_opset(model)
        if upgraded is not model:
            out, reports = _run_passes(upgraded, passes)
        if note:
            reports.notes.append(note)
    reports.left_alone = left_alone(out, reports)
    return retarget(_infer(out), target, trt_version), reports


def _run_passes(model: onnx.ModelProto, passes: list[str] | None):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    reports = Reports()
    for pass_ in select_passes(passes):
        out, report = _run_pass(out, pass_)
        reports.append(report)
    return out, reports


class Reports(list):
    """The passes' reports in order (a list, as before), and `left_alone`: the PassReport named
    "left-alone" listing every attention region still unfused with the passes' reasons."""

    left_alone: PassReport | None = None

    def __init__(self, *args):
        super().__init__(*args)
        self.notes: list[str] = []  # what optimize_model did besides the passes (an opset conversion)


LEFT_ALONE = "left-alone"


def left_alone(model: onnx.ModelProto, reports) -> PassReport:
    """Every region with the attention skeleton (attention_pattern.find_quadratic) still in `model` after
    the passes, each with the reasons the passes gave at its anchor (its ·V product node)."""
    report = PassReport(LEFT_ALONE)
    try:
        graph = import_graph(_strip_attnx_functions(_infer(model)))
        found = find_quadratic(graph)
    except Exception as exc:  # an unreadable final graph: say so instead of failing the optimisation
        report.details.append({"at": "?", "rewritten": False, "reasons": [],
                               "why": f"the graph after the passes could not be read for attention "
                                      f"regions: {str(exc).splitlines()[0][:200]}"})
        return report
    for att in found:
        anchor = att.product.node.name
        reasons = [{"pass": r.name, "why": d["why"]} for r in reports for d in r.details
                   if d.get("at") == anchor and not d.get("rewritten") and d.get("why")]
        steps = ", ".join(s.op for s in att.steps) or "none"
        why = ("; ".join(f"{x['pass']}: {x['why']}" for x in reasons) if reasons else
               f"no pass claimed it (ops between QKᵀ and ·V: {steps})")
        report.details.append({"at": anchor, "rewritten": False, "scores": att.scores.node.name,
                               "steps": [s.op for s in att.steps], "reasons": reasons,
                               "why": f"attention left unfused: {why}"})
    report.matched = len(report.details)
    return report
