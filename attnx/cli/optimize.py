"""`attnx optimize IN -o OUT`: the graph passes, then the target form, and a JSON report."""

from __future__ import annotations

import json
from pathlib import Path

from attnx.errors import AttnxError
from attnx.files import atomic_outputs, check_output_path

DEFAULT_FLOPS_SEQ_LEN = 4096


def _load(path: Path):
    """The ModelProto at `path`; a file the passes cannot take is an OnnxFileError saying why."""
    from attnx.surgeon.graph import read_model, validate_input_model

    model = read_model(path)
    validate_input_model(model, path)
    return model


def _parse_passes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise AttnxError("--passes needs at least one pass name, got an empty list")
    return names


def run(args) -> int:
    import onnx

    from attnx.surgeon.pipeline import optimize_model
    from attnx.surgeon.retarget import retarget
    from attnx.surgeon.shapes import matmul_flops

    if args.flops_seq_len < 1:
        raise AttnxError(f"--flops-seq-len must be >= 1, got {args.flops_seq_len}")
    out = check_output_path(args.output, "-o", make_parents=True)  # both outputs, before any work
    report_path = check_output_path(args.report, "--report") if args.report else None
    model = _load(Path(args.input))
    optimized, reports = optimize_model(model, "ort", _parse_passes(args.passes))
    final = retarget(optimized, args.target)
    # the cost of a fused node is that of its function body, so count on the attnx form
    before, unresolved_before = matmul_flops(model, args.flops_seq_len)
    after, unresolved_after = matmul_flops(optimized, args.flops_seq_len)
    report = {"passes": [r.to_json() for r in reports], "flops_before": before, "flops_after": after,
              "flops_seq_len": args.flops_seq_len, "target": args.target}
    if unresolved_before or unresolved_after:
        report["flops_unresolved_nodes"] = {"before": unresolved_before, "after": unresolved_after}
    with atomic_outputs(out, *([report_path] if report_path else [])) as staged:  # both land, or neither
        onnx.save(final, staged[0])
        if report_path:
            staged[1].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for r in reports:
        print(f"{r.name:<30} matched {r.matched}, rewritten {r.rewritten}")
        for d in r.details:
            print(f"  {d['at']}: {d['change'] if d['rewritten'] else 'left alone: ' + d['why']}")
    ratio = f" ({before / after:.1f}x fewer)" if after else ""
    print(f"MatMul/Einsum FLOPs at N = {args.flops_seq_len}, batch 1: {before:.3g} → {after:.3g}{ratio}")
    print(f"wrote {out} ({args.target} form)")
    return 0


def add_parser(subparsers) -> None:
    from attnx.surgeon.names import PASS_ORDER, TARGETS

    p = subparsers.add_parser("optimize", help="fuse and reassociate attention, then write the ort, portable or "
                                               "trt form")
    p.add_argument("input", help="ONNX file (attnx form, or a plain export of someone else's model)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--target", choices=list(TARGETS), default="ort",
                   help="ort: attnx nodes with local functions; portable: inlined, standard ops only; trt: "
                        "TensorRT plugin nodes (default ort)")
    p.add_argument("--passes", default=None,
                   help=f"comma-separated passes to run, in pipeline order whatever the order given "
                        f"(default all: {','.join(PASS_ORDER)})")
    p.add_argument("--report", metavar="PATH", default=None, help="write the JSON report here")
    p.add_argument("--flops-seq-len", type=int, default=DEFAULT_FLOPS_SEQ_LEN,
                   help=f"sequence length the FLOP counts are taken at (default {DEFAULT_FLOPS_SEQ_LEN})")
    p.set_defaults(run=run)
