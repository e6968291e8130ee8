"""`attnx generate [MODEL]`: greedy decoding with the prefill and decode graphs, timed."""

from __future__ import annotations

from attnx.cli.options import add_export_options, add_plugin_library, add_providers, add_seed, at_least


def add_parser(subparsers) -> None:
    from attnx.models import DEFAULT_MODEL

    p = subparsers.add_parser("generate", help="greedy decoding with the prefill and decode graphs in ONNX Runtime")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"a causal zoo language model (default {DEFAULT_MODEL})")
    p.add_argument("--prompt-len", type=at_least(1), default=16, help="random prompt length (default 16)")
    p.add_argument("--new-tokens", type=at_least(1), default=32, help="tokens to generate (default 32)")
    p.add_argument("--backend", choices=["ort", "trt"], default="ort",
                   help="ort: ONNX Runtime on --providers (default cpu); trt: TensorRT engines with the "
                        "plugin library")
    add_providers(p)
    add_plugin_library(p, use="for --backend trt or --providers tensorrt")
    add_seed(p, default=0, of="the random prompt")
    add_export_options(p)
    p.add_argument("--server", metavar="URL",
                   help="decode through a running Triton server instead (`attnx triton serve`; grpc://HOST:PORT, "
                        "http://HOST:PORT or HOST:PORT), the model served as --server-model; --backend, "
                        "--providers and the export options are the server's then")
    p.add_argument("--server-model", metavar="NAME", help="the model's name on the server (default: MODEL)")
    p.add_argument("--json", metavar="PATH",
                   help="write the prompt's and the generated token ids, the model and the seed as JSON")
    p.set_defaults(run=run)


def _server_run(args) -> dict:
    """Greedy decoding through a Triton server: the same prompt as offline for the seed."""
    import os
    import statistics

    from attnx.generate import random_prompt
    from attnx.serve.client import ServerModel

    model = ServerModel(args.server, args.server_model or args.model)
    try:
        prompt = random_prompt(model.vocab_size, args.prompt_len, args.seed)[0].tolist()
        tokens, latencies = model.generate(prompt, args.new_tokens, sequence_id=(os.getpid() << 20) + args.seed + 1)
    finally:
        model.close()
    print(f"prompt ({len(prompt)} tokens): {prompt[:16]}{' …' if len(prompt) > 16 else ''}")
    print(f"generated ({len(tokens)} tokens): {tokens}")
    print(f"prefill request: {latencies[0]:.2f} ms" + (f"; decode requests: median {statistics.median(latencies[1:]):.3f}"
                                                       f" ms over {len(latencies) - 1}" if len(latencies) > 1 else ""))
    return {"prompt": prompt, "tokens": tokens, "source": f"triton {args.server} model {model.model}"}


def _write_json(path: str, record: dict) -> None:
    import json

    from attnx.files import write_text

    write_text(path, json.dumps(record, indent=1) + "\n")


def run(args) -> int:
    import tempfile

    if args.json:
        from attnx.files import check_output_path

        check_output_path(args.json, "--json", make_parents=True)
    if args.server:
        record = _server_run(args)
        if args.json:
            _write_json(args.json, {"model": args.model, "seed": args.seed, **record})
        return 0

    from attnx.errors import AttnxError
    from attnx.progress import warn

    if args.backend == "trt" and args.providers:
        raise AttnxError(f"--providers ({', '.join(args.providers)}) are ONNX Runtime's: expected them with "
                         "--backend ort, found --backend trt")
    plugins = args.plugins
    if plugins and args.backend != "trt" and "tensorrt" not in (args.providers or []):
        warn("attnx generate", f"--plugins {plugins} is ignored: only --backend trt or --providers "
                               "tensorrt loads a plugin library")
        plugins = None
    from attnx.generate import generate
    from attnx.models import load_model
    from attnx.progress import Progress

    progress = Progress(1)
    with tempfile.TemporaryDirectory(prefix="attnx-generate-") as tmp:
        runtime = ("TensorRT" if args.backend == "trt" else
                   f"ONNX Runtime ({', '.join(args.providers or ['cpu'])})")
        with progress.step(f"export {args.model} prefill and decode graphs, then decode {args.new_tokens} tokens "
                           f"greedily in {runtime}"):
            result = generate(load_model(args.model), tmp, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                              backend=args.backend, dtype=args.dtype, opset=args.opset, seed=args.seed,
                              plugin_library=plugins, providers=args.providers)
    print(result.summary())
    if args.json:
        _write_json(args.json, {"model": args.model, "seed": args.seed, "prompt": result.prompt,
                                "tokens": result.tokens, "source": f"offline {runtime}"})
    return 0
