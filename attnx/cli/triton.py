"""`attnx triton MODEL|FILE -o REPO` writes a Triton model repository; `attnx triton serve REPO` serves one."""

from __future__ import annotations

from attnx.cli.options import add_export_options, add_plugin_library, add_providers, at_least

SERVE = "serve"


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number), found {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, found {text}")
    return value


def add_parser(subparsers) -> None:
    from attnx import serve as defaults

    p = subparsers.add_parser(
        "triton", help="write a Triton Inference Server model repository, or serve one (`attnx triton serve REPO`)",
        description="attnx triton MODEL|FILE -o REPO [options]: write REPO/<name>/config.pbtxt and REPO/<name>/1/. "
                    "attnx triton serve REPO [--http-port P] [--grpc-port P]: run tritonserver on REPO until Ctrl-C. "
                    "See docs/serving.md.")
    p.add_argument("model", metavar="MODEL|FILE|serve",
                   help="a zoo model or ONNX file to write a repository for (in --mode stream FILE's "
                        ".prefill/.decode.onnx pair), or `serve`")
    p.add_argument("repo", nargs="?", metavar="REPO", help="with `serve`: the repository to serve")
    write = p.add_argument_group("writing a repository")
    write.add_argument("-o", "--output", metavar="REPO", help="repository folder to write into")
    write.add_argument("--backend", choices=defaults.BACKENDS, default="python",
                       help="python: model.py running the attnx files in ONNX Runtime, on any Triton (default); "
                            "onnxruntime / tensorrt: Triton's ONNX Runtime or TensorRT backend")
    write.add_argument("--mode", choices=defaults.MODES, default="stream",
                       help="stream: prefill and decode behind the sequence batcher (default); full: whole sequences")
    write.add_argument("--name", help="model name in the repository (default: the model's or file's name)")
    write.add_argument("--max-batch", type=at_least(0), metavar="N", default=defaults.DEFAULT_MAX_BATCH,
                       help=f"Triton's max_batch_size (default {defaults.DEFAULT_MAX_BATCH}; 0: no batch dimension, "
                            "python backend only in stream)")
    write.add_argument("--instances", type=at_least(1), metavar="N", default=1, help="model instances (default 1)")
    write.add_argument("--max-sequences", type=at_least(1), metavar="N", default=defaults.DEFAULT_MAX_SEQUENCES,
                       help="sequences one instance holds at once (the batcher's max_candidate_sequences, default "
                            f"{defaults.DEFAULT_MAX_SEQUENCES})")
    write.add_argument("--idle-timeout", type=_seconds, default=defaults.DEFAULT_IDLE_TIMEOUT_S, metavar="SECONDS",
                       help=f"free a sequence idle this long (max_sequence_idle_microseconds; default "
                            f"{defaults.DEFAULT_IDLE_TIMEOUT_S:g})")
    write.add_argument("--accelerator", choices=["tensorrt"], default=None,
                       help="with --backend onnxruntime: ONNX Runtime's TensorRT execution accelerator")
    write.add_argument("--fp16", action="store_true", help="fp16 TensorRT kernels (--accelerator tensorrt, tensorrt)")
    add_providers(write)
    add_plugin_library(write, use="for --backend tensorrt's engine")
    add_export_options(write)
    run_ = p.add_argument_group("serving (attnx triton serve REPO)")
    run_.add_argument("--http-port", type=at_least(1), metavar="P", default=defaults.DEFAULT_HTTP_PORT,
                      help=f"HTTP port on 127.0.0.1 (default {defaults.DEFAULT_HTTP_PORT})")
    run_.add_argument("--grpc-port", type=at_least(1), metavar="P", default=defaults.DEFAULT_GRPC_PORT,
                      help=f"gRPC port on 127.0.0.1 (default {defaults.DEFAULT_GRPC_PORT})")
    run_.add_argument("--ready-timeout", type=_seconds, default=defaults.DEFAULT_READY_TIMEOUT_S, metavar="SECONDS",
                      help="how long to wait for the models to be ready (default "
                           f"{defaults.DEFAULT_READY_TIMEOUT_S:g})")
    p.set_defaults(run=run, triton_parser=p)


def run(args) -> int:
    if args.model == SERVE:
        if args.repo is None:
            args.triton_parser.error("attnx triton serve: expected REPO, the repository to serve")
        return _serve(args)
    if args.repo is not None:
        args.triton_parser.error(f"unexpected argument {args.repo!r}: write with `attnx triton MODEL -o REPO`, "
                                 "serve with `attnx triton serve REPO`")
    if args.output is None:
        args.triton_parser.error("attnx triton MODEL|FILE: expected -o REPO, the repository folder to write")
    return _write(args)


def _write(args) -> int:
    from pathlib import Path

    from attnx.progress import Progress
    from attnx.serve.repository import write_repository

    source = args.model
    if not source.endswith(".onnx"):
        from attnx.models import load_model

        source = load_model(args.model)
    elif not Path(source).exists() and args.mode == "full":
        from attnx.errors import InputError

        raise InputError(f"expected an ONNX file at {source}, found none")
    progress = Progress(1)
    with progress.step(f"write the {args.backend} {args.mode} repository of {args.model} into {args.output}"):
        repo = write_repository(source, args.output, backend=args.backend, mode=args.mode, name=args.name,
                                max_batch=args.max_batch, instances=args.instances,
                                idle_timeout_s=args.idle_timeout, max_sequences=args.max_sequences,
                                providers=args.providers, accelerator=args.accelerator, fp16=args.fp16,
                                dtype=args.dtype, opset=args.opset, plugin_library=args.plugins)
    for path in repo.files:
        print(path)
    from attnx.progress import warn

    for note in repo.notes:
        warn("attnx triton", note)
    return 0


def _serve(args) -> int:
    import signal
    import sys

    from attnx.serve.server import serve

    def terminate(signum, frame):
        raise KeyboardInterrupt  # SIGTERM ends the server as Ctrl-C does

    previous = signal.signal(signal.SIGTERM, terminate)
    waited = [0]

    def on_wait(elapsed: float) -> None:
        if int(elapsed) >= waited[0] + 5:
            waited[0] = int(elapsed)
            print(f"[attnx] waiting for the models of {args.repo} to be ready ({int(elapsed)} s)", file=sys.stderr,
                  flush=True)

    try:
        print(f"[attnx] starting tritonserver on {args.repo}", file=sys.stderr, flush=True)
        with serve(args.repo, http_port=args.http_port, grpc_port=args.grpc_port,
                   ready_timeout_s=args.ready_timeout, on_wait=on_wait) as server:
            print(f"[attnx] serving {args.repo}: HTTP {server.http_url}, gRPC grpc://{server.grpc_url} "
                  "(Ctrl-C stops)", file=sys.stderr, flush=True)
            code = server.process.wait()
            print(f"[attnx] tritonserver exited with status {code}; its log ends:\n{server.log_tail()}",
                  file=sys.stderr)
            return 3
    finally:
        signal.signal(signal.SIGTERM, previous)
