"""Benchmarks: `attnx bench NAME`. Each prints ratios against a baseline run side by side.

A benchmark is a module in this package with `add_arguments(parser)` and `run(args) -> int`; it
is listed here by name with its description (attnx.cli.bench makes each a subcommand, importing
the module only when the command line names it: the benchmarks import torch and ONNX Runtime).
"""

BENCHMARKS: dict[str, tuple[str, str]] = {  # name → (module in attnx.bench, description)
    "stream": ("stream", "decode latency per token and state bytes against position (ONNX Runtime CPU)"),
    "length-generalisation": ("length_generalisation",
                              "attention entropy and output drift at 4× and 16× the seen length (eager, float64); "
                              "--trained: task accuracy of the trained zoo models up to 16× their training length"),
    "serve": ("serve", "tokens/s and p50/p99 latency per token at 1, 8, 32 concurrent sequences on the bundled "
                       "Triton server; state bytes per sequence against position"),
    "fusion": ("fusion", "ONNX Runtime CPU latency before/after `attnx optimize` on public models' dynamo exports "
                         "(transformers, torch.nn, x-transformers, local-attention, performer, FLASH, timm), and "
                         "the time optimize takes"),
    "reassoc": ("reassoc", "ONNX Runtime CPU latency before/after (QKᵀ)V → Q(KᵀV), beside a hand-written Q(KᵀV) graph"),
}
