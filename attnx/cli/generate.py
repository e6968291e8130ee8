"""`attnx generate [MODEL]`: greedy decoding with the prefill and decode graphs, timed."""

from __future__ import annotations

from attnx.cli.options import add_export_options, add_plugin_library, add_seed, at_least


def add_parser(subparsers) -> None:
    from attnx.models import DEFAULT_MODEL

    p = subparsers.add_parser("generate", help="greedy decoding with the prefill and decode graphs in ONNX Runtime")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"a causal zoo language model (default {DEFAULT_MODEL})")
    p.add_argument("--prompt-len", type=at_least(1), default=16, help="random prompt length (default 16)")
    p.add_argument("--new-tokens", type=at_least(1), default=32, help="tokens to generate (default 32)")
    p.add_argument("--backend", choices=["ort", "trt"], default="ort",
                   help="ort: ONNX Runtime CPU (default); trt: TensorRT engines with the plugin library")
    add_plugin_library(p, use="for --backend trt")
    add_seed(p, default=0, of="the random prompt")
    add_export_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import tempfile

    from attnx.generate import generate
    from attnx.models import load_model
    from attnx.progress import Progress

    progress = Progress(1)
    with tempfile.TemporaryDirectory(prefix="attnx-generate-") as tmp:
        runtime = "TensorRT" if args.backend == "trt" else "ONNX Runtime"
        with progress.step(f"export {args.model} prefill and decode graphs, then decode {args.new_tokens} tokens "
                           f"greedily in {runtime}"):
            result = generate(load_model(args.model), tmp, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                              backend=args.backend, dtype=args.dtype, opset=args.opset, seed=args.seed,
                              plugin_library=args.plugins)
    print(result.summary())
    return 0
