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
    # None where the flag is not given: a zoo model's default, a factory's own example
    loaded = load_model(args.model, batch=args.batch, seq_len=args.trace_len)
    export_step(loaded, Path(args.output), Progress(1), dtype=args.dtype, opset=args.opset, mode=args.mode)
    return 0


def traced_at(loaded) -> str:
    """The sizes of the example `loaded` holds, as a progress line says them."""
    sizes = [f"batch {loaded.batch}" if loaded.batch is not None else None,
             f"seq {loaded.seq_len}" if loaded.seq_len is not None else None]
    shapes = ", ".join(str(list(t.shape)) for t in loaded.example_inputs)
    return f"traced at {', '.join(s for s in sizes if s)}" if any(sizes) else f"traced at inputs {shapes}"


def export_step(loaded, out: Path, progress, *, dtype: str, opset: int | None, mode: str = "full") -> None:
    """Export `loaded` to `out` as one step of `progress`, noting each graph's attnx nodes; the step's
    title says the sizes of the example traced (`loaded.batch`, `loaded.seq_len`)."""
    import onnx

    from attnx.exporters import default_opset, export
    from attnx.exporters.stream import export_stream

    opset = default_opset(loaded.module) if opset is None else opset
    with progress.step(f"export {loaded.name} ({mode}) → {out} ({dtype}, opset {opset}, {traced_at(loaded)})"):
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
