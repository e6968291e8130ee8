"""`attnx optimize IN -o OUT`: the graph passes, then the target form, and a JSON report."""

from __future__ import annotations

import json
from pathlib import Path

from attnx.errors import AttnxError
from attnx.files import atomic_outputs, check_output_path

DEFAULT_FLOPS_SEQ_LEN = 4096


def _load(path: Path):
    """(the ModelProto at `path`, a note when its opset was converted); a file the passes cannot take is an
    OnnxFileError saying why."""
    from attnx.surgeon.graph import read_model, validate_input_model

    model = read_model(path)
    note = validate_input_model(model, path)  # opset 17 is converted in place
    return model, note


def _trt_version(text: str) -> tuple[int, int]:
    """argparse type of --trt-version: X.Y, at least the oldest supported (a usage error says which)."""
    import argparse

    from attnx.surgeon.trt_versions import parse_version

    try:
        return parse_version(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _attention_ops(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        if n.domain in ("", "ai.onnx") and n.op_type in ("Attention", "RotaryEmbedding"):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _lowering_line(target: str, version, why: str, optimized, final) -> str:
    before, after = _attention_ops(optimized), _attention_ops(final)
    lowered = [f"{before[op] - after.get(op, 0)} {op}" for op in sorted(before) if before[op] > after.get(op, 0)]
    kept = [f"{n} {op}" for op, n in sorted(after.items())]
    done = f"lowered {', '.join(lowered)} to primitive ops" if lowered else "nothing to lower"
    for_ = (f"for TensorRT {version[0]}.{version[1]} ({why})" if target == "trt"
            else "for ONNX Runtime's TensorRT provider")
    return f"{for_}: {done}" + (f"; kept {', '.join(kept)} (its parser takes them)" if kept else "")


def report_lines(reports, notes: bool = True) -> list[str]:
    """Each pass's counts, then every candidate under it: what changed, or why it was left alone (the check
    that failed and what was found). `optimize` prints these lines and `convert` notes them."""
    lines = list(getattr(reports, "notes", [])) if notes else []
    left = getattr(reports, "left_alone", None)
    for r in [*reports, *([left] if left is not None else [])]:
        lines.append(f"{r.name:<30} matched {r.matched}, rewritten {r.rewritten}")
        for d in r.details:
            if d.get("rewritten"):
                lines.append(f"  {d.get('at', '?')}: {d.get('change', 'rewritten')}")
            else:
                lines.append(f"  {d.get('at', '?')}: left alone: {d.get('why') or 'no reason recorded'}")
    return lines


def check_standard(model, optimized, final, target: str, export_len=None):
    """The standard-node check (attnx.surgeon.standard_nodes) of the file written, where the input holds
    ONNX Attention/RotaryEmbedding: on `final` for the forms ONNX Runtime runs as they are (ort, portable),
    on the ort form of the same rewrite for trt and ort-trt (their plugin nodes need TensorRT). None when
    the input holds none."""
    from attnx.surgeon.standard_nodes import check_standard_nodes

    written = final if target in ("ort", "portable") else optimized
    result = check_standard_nodes(model, written, export_len=export_len)
    if result is not None and written is not final:
        result.notes.append(f"the {target} form holds TensorRT plugin nodes: checked its ort form (the same "
                            "rewrites)")
    return result


def say_standard(result, command: str, note=print) -> int:
    """Print the standard-node check; 1 when the written file does worse than the input (parity failed),
    else 0 (a warning on stderr where the input itself fails: the written file behaves as the input does)."""
    from attnx.progress import warn

    if result is None:
        return 0
    for line in result.lines():
        note(line)
    if result.status == "regression":
        warn(command, "the written file fails or differs where its input runs: "
                      + "; ".join(f"{c.where}: {c.regression}" for c in result.regressions))
        return 1
    if result.status == "input-fails":
        warn(command, "the INPUT itself fails in ONNX Runtime at "
                      + ", ".join(c.where for c in result.input_fails)
                      + " (a size baked in by the exporter?); the written file behaves as the input does there")
    return 0


def run(args) -> int:
    import onnx

    from attnx.progress import warn
    from attnx.surgeon.pipeline import optimize_model
    from attnx.surgeon.retarget import retarget
    from attnx.surgeon.shapes import matmul_flops, uncounted_ops
    from attnx.surgeon.trt_versions import default_version

    if args.flops_seq_len < 1:
        raise AttnxError(f"--flops-seq-len must be >= 1, got {args.flops_seq_len}")
    if args.trt_version is not None and args.target != "trt":
        warn("attnx optimize", f"--trt-version is ignored: only --target trt reads it (target {args.target})")
    out = check_output_path(args.output, "-o", make_parents=True)  # both outputs, before any work
    report_path = check_output_path(args.report, "--report") if args.report else None
    version, why = (args.trt_version, "given") if args.trt_version else default_version()
    model, note = _load(Path(args.input))
    optimized, reports = optimize_model(model, "ort", args.passes)
    notes = [note] if note else []
    notes += getattr(reports, "notes", [])
    final = retarget(optimized, args.target, version)
    # the cost of a fused node is that of its function body, so count on the attnx form (retarget copies)
    before, unresolved_before = matmul_flops(model, args.flops_seq_len)
    after, unresolved_after = matmul_flops(optimized, args.flops_seq_len)
    uncounted = sorted(set(uncounted_ops(model)) | set(uncounted_ops(optimized)))
    left = getattr(reports, "left_alone", None)
    report = {"passes": [r.to_json() for r in reports], "left_alone": left.details if left is not None else [],
              "notes": notes, "flops_before": before, "flops_after": after,
              "flops_seq_len": args.flops_seq_len, "target": args.target}
    if args.target == "trt":
        report["trt_version"] = f"{version[0]}.{version[1]}"
    if unresolved_before or unresolved_after:
        report["flops_unresolved_nodes"] = {"before": unresolved_before, "after": unresolved_after}
    if uncounted:
        report["flops_uncounted_ops"] = uncounted
    standard = check_standard(model, optimized, final, args.target)
    if standard is not None:
        report["standard_nodes_check"] = standard.to_json()
    with atomic_outputs(out, *([report_path] if report_path else [])) as staged:  # both land, or neither
        onnx.save(final, staged[0])
        if report_path:
            staged[1].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for line in notes + report_lines(reports, notes=False):
        print(line)
    status = say_standard(standard, "attnx optimize")
    if args.target in ("trt", "ort-trt"):
        print(_lowering_line(args.target, version, why, optimized, final))
    if before == after:
        ratio = " (unchanged)"
    elif after and before > after:
        ratio = f" ({before / after:.1f}x fewer)"
    elif before:
        ratio = f" ({after / before:.1f}x more)"  # e.g. a product of unknown shape before, counted once fused
    else:
        ratio = ""
    line = f"MatMul/Einsum FLOPs at N = {args.flops_seq_len}, batch 1: {before:.3g} → {after:.3g}{ratio}"
    if uncounted:
        line += f"; not counted: {', '.join(uncounted)} (no body to count)"
    if unresolved_before or unresolved_after:
        line += f"; {unresolved_before} → {unresolved_after} products of unknown shape left out"
    print(line)
    print(f"wrote {out} ({args.target} form)")
    return status


def add_parser(subparsers) -> None:
    from attnx.cli.options import ListOption
    from attnx.surgeon.names import PASS_ORDER, TARGETS
    from attnx.surgeon.trt_versions import OLDEST, PARSER_SINCE, fmt, supported_text

    p = subparsers.add_parser("optimize", help="fuse and reassociate attention, then write the ort, portable, "
                                               "trt or ort-trt form")
    p.add_argument("input", help="ONNX file (attnx form, or a plain export of someone else's model)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--target", choices=list(TARGETS), default="ort",
                   help="ort: attnx nodes with local functions; portable: inlined, standard ops only; trt: "
                        "TensorRT plugin nodes, standard ops its parser lacks lowered; ort-trt: for ONNX Runtime's "
                        "TensorRT provider (plugin nodes, Attention and RotaryEmbedding lowered) (default ort)")
    p.add_argument("--trt-version", type=_trt_version, default=None, metavar="X.Y",
                   help=f"TensorRT the trt form is for ({supported_text()}): Attention is lowered below "
                        f"{fmt(PARSER_SINCE['Attention'])}, RotaryEmbedding below {fmt(PARSER_SINCE['RotaryEmbedding'])} "
                        f"(default: the installed tensorrt's version, else {fmt(OLDEST)}, JetPack 6's)")
    p.add_argument("--passes", action=ListOption, default=None, metavar="PASS", choices=list(PASS_ORDER),
                   help=f"passes to run, repeatable or comma-separated, in pipeline order whatever the order given "
                        f"(default all: {','.join(PASS_ORDER)})")
    p.add_argument("--report", metavar="PATH", default=None, help="write the JSON report here")
    p.add_argument("--flops-seq-len", type=int, default=DEFAULT_FLOPS_SEQ_LEN,
                   help=f"sequence length the FLOP counts are taken at (default {DEFAULT_FLOPS_SEQ_LEN})")
    p.set_defaults(run=run)
