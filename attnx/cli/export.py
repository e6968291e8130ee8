"""`attnx export MODEL -o FILE`: the model in attnx form, whole or as streaming graphs."""

from __future__ import annotations

from pathlib import Path

from attnx.cli.options import MODEL_HELP, add_export_options, add_trace_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a model to ONNX in attnx form")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    add_trace_options(p)
    p.add_argument("--mode", choices=["full", "prefill", "decode", "both"], default="full",
                   help="the whole model, or the streaming graphs (both: FILE's stem + .prefill/.decode.onnx)")
    add_export_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from attnx.exporters.stream import stream_paths
    from attnx.files import check_output_path
    from attnx.models import load_model
    from attnx.progress import Progress

    outputs = [args.output] if args.mode == "full" else stream_paths(args.output, args.mode).values()
    for path in outputs:  # before the model is built: a bad path costs nothing
        check_output_path(path, "-o", make_parents=True)
    loaded = load_model(args.model, batch=args.batch, seq_len=args.trace_len)
    export_step(loaded, Path(args.output), Progress(1), dtype=args.dtype, opset=args.opset, batch=args.batch,
                trace_len=args.trace_len, mode=args.mode)
    return 0


def export_step(loaded, out: Path, progress, *, dtype: str, opset: int | None, batch: int, trace_len: int,
                mode: str = "full") -> None:
    """Export `loaded` to `out` as one step of `progress`, noting each graph's attnx nodes.

    batch, trace_len: the traced example `loaded` was built at (said in the step's title)."""
    import onnx

    from attnx.exporters import default_opset, export
    from attnx.exporters.stream import export_stream

    opset = default_opset(loaded.module) if opset is None else opset
    with progress.step(f"export {loaded.name} ({mode}) → {out} ({dtype}, opset {opset}, traced at batch "
                       f"{batch}, seq {trace_len})"):
        if mode == "full":
            written = {"full": out}
            export(loaded, out, dtype=dtype, opset=opset)
        else:
            written = export_stream(loaded, out, mode, dtype=dtype, opset=opset)
        for graph_mode, path in written.items():
            proto = onnx.load(path, load_external_data=False)
            nodes = [n for n in proto.graph.node if n.domain == "attnx"]
            progress.note(f"{graph_mode}: {path}: {len(nodes)} attnx node(s): "
                          f"{', '.join(sorted({n.op_type for n in nodes})) or 'none'}; "
                          f"{len(proto.functions)} local function(s)")
