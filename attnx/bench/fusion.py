"""Fusion benchmark: ONNX Runtime CPU latency of public models' exports before and after
`attnx optimize`, and the time `optimize` itself takes.

Each model is a public implementation (Hugging Face transformers, torch.nn, x-transformers,
local-attention, performer-pytorch, FLASH-pytorch, timm) built from a tiny config with seeded
weights (no downloads), exported as a user would: `torch.onnx.export(dynamo=True)` at opset 23
with a dynamic sequence axis, traced at a short length; where that export fails, at the benchmark's
length with static shapes; where that fails too, TorchScript at opset 20. Both graphs run at
batch 1 and length N (`--seq-len`, default 2048; for the ViT, the patch grid nearest N), median of
`--repeats` runs. A model whose package is not installed, or that fails at any step, is a row
saying so. Ratios are after/before (below 1: faster after). `rel diff` is the largest output
difference, relative to the output's largest value, between the two graphs on the timed inputs.
"""

from __future__ import annotations

import json
import math
import time

DEFAULT_SEQ_LEN = 2048
TRACE_LEN = 40  # the dynamic export's example: not a multiple of any window, group or chunk below
RTOL = 1e-4  # float32 fusion reorders sums (~1e-6 relative); a wrong rewrite moves outputs by 1e-2 or more
DIM, HEADS = 32, 4


class NotInstalled(Exception):
    """The model's package does not import: the row says which, and how to install it."""


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:  # absent, or an install that does not import
        raise NotInstalled(f"not installed: {package} (pip install {package}; {type(exc).__name__})") from exc


# ---------------------------------------------------------------- the models: (module, inputs, dynamic)
# each builder takes N and returns the eager module, example inputs at N (the timed ones' shapes) and a
# maker of the dynamic export's inputs (None: the model exports at N with static shapes only)

def _hf_lm(kind: str, n: int):
    import torch

    transformers = _need("transformers", "transformers")

    class LM(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    positions = max(n, TRACE_LEN, 64)
    if kind == "llama":
        config = transformers.LlamaConfig(vocab_size=64, hidden_size=DIM, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=HEADS, num_key_value_heads=2,
                                          max_position_embeddings=positions, attn_implementation="eager")
        module = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPT2Config(vocab_size=64, n_embd=DIM, n_layer=1, n_head=HEADS, n_positions=positions,
                                         bos_token_id=0, eos_token_id=0, attn_implementation="eager")
        module = transformers.GPT2LMHeadModel(config)
    return LM(module), lambda length: (torch.randint(0, 64, (1, length)),)


def _llama(n):
    return _hf_lm("llama", n)


def _gpt2(n):
    return _hf_lm("gpt2", n)


def _encoder(n):
    import torch

    module = torch.nn.TransformerEncoderLayer(DIM, HEADS, 64, batch_first=True, dropout=0.0)
    return module, lambda length: (torch.randn(1, length, DIM),)


def _x_transformers(n):
    import torch

    xt = _need("x_transformers", "x-transformers")

    class XT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.d = xt.Decoder(dim=DIM, depth=1, heads=HEADS, attn_kv_heads=2, rotary_pos_emb=True)

        def forward(self, x):
            return self.d(x)

    return XT(), lambda length: (torch.randn(1, length, DIM),)


def _local_attention(n):
    import torch

    la = _need("local_attention", "local-attention")
    d = DIM // HEADS
    module = la.LocalAttention(window_size=16, causal=True, look_backward=1, autopad=True)

    class Local(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = module

        def forward(self, q, k, v):
            return self.a(q, k, v)

    return Local(), lambda length: tuple(torch.randn(1, HEADS, length, d) for _ in range(3))


def _performer(n):
    import torch

    pp = _need("performer_pytorch", "performer-pytorch")
    module = pp.SelfAttention(dim=DIM, heads=HEADS, dim_head=DIM // HEADS, causal=False, nb_features=16)
    return module, lambda length: (torch.randn(1, length, DIM),)


def _flash(n):
    import torch

    fp = _need("flash_pytorch", "FLASH-pytorch")
    module = fp.FLASH(dim=DIM, group_size=16, query_key_dim=16, causal=True)
    return module, lambda length: (torch.randn(1, length, DIM),)


def _vit_grid(n: int) -> tuple[int, int]:
    """A patch grid h × w with h·w nearest `n` (h a power of two, w = ⌈n/h⌉)."""
    h = 2 ** max(0, int(math.log2(math.sqrt(n))))
    return h, max(1, math.ceil(n / h))


def _timm_vit(n):
    import torch

    try:
        from attnx.bench._timm import import_timm
        timm = import_timm()
    except Exception as exc:
        raise NotInstalled(f"not installed: timm (pip install --no-deps timm; {type(exc).__name__})") from exc
    h, w = _vit_grid(n)
    module = timm.create_model("vit_base_patch16_rope_reg1_gap_256", pretrained=False, img_size=(16 * h, 16 * w),
                               patch_size=16, embed_dim=DIM, depth=1, num_heads=HEADS, num_classes=10)
    return module, None, (torch.randn(1, 3, 16 * h, 16 * w),)


MODELS = {  # name → builder
    "llama": _llama,
    "gpt2": _gpt2,
    "encoder": _encoder,
    "x-transformers": _x_transformers,
    "local-attention": _local_attention,
    "performer": _performer,
    "flash": _flash,
    "timm-vit-rope": _timm_vit,
}
DESCRIPTIONS = {
    "llama": "transformers LlamaForCausalLM, eager attention, grouped KV heads",
    "gpt2": "transformers GPT2LMHeadModel, eager attention",
    "encoder": "torch.nn.TransformerEncoderLayer (SDPA: ONNX Attention at opset 23)",
    "x-transformers": "x-transformers Decoder, rotary, grouped KV heads",
    "local-attention": "local-attention LocalAttention, causal, window 16, look-back 1",
    "performer": "performer-pytorch SelfAttention (FAVOR+ FastAttention)",
    "flash": "FLASH-pytorch FLASH, causal, group 16",
    "timm-vit-rope": "timm ViT with 2-D RoPE (image sized to about N patches)",
}


# ---------------------------------------------------------------- export, time, compare

def _export(module, inputs, dynamic: bool):
    """The ModelProto torch's dynamo exporter writes at opset 23; `dynamic`: every input axis past the batch
    that has the example's length (axis 1, or axis 2 of a [B, H, N, d] input) is one Dim."""
    import logging
    import warnings

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    names = [f"x{i}" for i in range(len(inputs))]
    shapes = None
    if dynamic:
        seq = torch.export.Dim("seq", min=2, max=65536)
        length = inputs[0].shape[-2] if inputs[0].dim() == 4 else inputs[0].shape[1]
        shapes = tuple({axis: seq for axis in range(1, t.dim()) if t.shape[axis] == length} for t in inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, tuple(inputs), dynamo=True, opset_version=23, optimize=True,
                                    input_names=names, dynamic_shapes=shapes, verbose=False)
    return program.model_proto


def _export_torchscript(module, inputs):
    import io
    import warnings

    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs), buffer, dynamo=False, opset_version=20,
                          input_names=[f"x{i}" for i in range(len(inputs))])
    return onnx.load_from_string(buffer.getvalue())


def _exported(module, make_inputs, timed_inputs):
    """(ModelProto, how it was exported, the export errors on the way)."""
    tried = []
    attempts = ([("dynamo opset 23, dynamic length", lambda: _export(module, make_inputs(TRACE_LEN), True))]
                if make_inputs is not None else [])
    attempts += [("dynamo opset 23, static", lambda: _export(module, timed_inputs, False)),
                 ("torchscript opset 20, static", lambda: _export_torchscript(module, timed_inputs))]
    for how, attempt in attempts:
        try:
            return attempt(), how, tried
        except Exception as exc:  # torch's exporters raise many types; the row keeps the message
            tried.append(f"{how}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
    raise RuntimeError("every export failed: " + " | ".join(tried))


def _rel_diff(before, after) -> float:
    import numpy as np

    worst = 0.0
    for want, got in zip(before, after):
        want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
        if want.shape != got.shape or not np.array_equal(np.isfinite(want), np.isfinite(got)):
            return float("inf")
        finite = np.isfinite(want)
        if not finite.any():
            continue
        scale = max(float(np.abs(want[finite]).max()), 1e-6)
        worst = max(worst, float(np.abs(got[finite] - want[finite]).max()) / scale)
    return worst


def measure(name: str, n: int, repeats: int, threads: int) -> dict:
    """One row: the model `name` at length `n`; a failure at any step is the row's `status`."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from attnx.surgeon import optimize_model

    row = {"model": name, "seq_len": n, "status": "ok"}
    stage = "build"
    try:
        torch.manual_seed(0)
        built = MODELS[name](n)
        module, make_inputs = built[0].eval(), built[1]
        timed = built[2] if len(built) > 2 else make_inputs(n)
        stage = "export"
        model, how, tried = _exported(module, make_inputs, timed)
        row["export"] = how
        if tried:
            row["export_fallbacks"] = tried
        stage = "optimize"
        start = time.perf_counter()
        optimized, reports = optimize_model(model, "ort")
        row["optimize_s"] = time.perf_counter() - start
        fused = [f"{r.name}×{r.rewritten}" for r in reports if r.rewritten]
        row["fused"] = fused
        row["left_alone"] = sum(1 for r in reports for d in r.details if not d.get("rewritten"))
        stage = "ONNX Runtime"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        sessions = [ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
                    for m in (model, optimized)]
        names = [i.name for i in sessions[0].get_inputs()]
        feeds = {k: t.numpy() for k, t in zip(names, timed)}
        outs = [s.run(None, feeds) for s in sessions]
        row["rel_diff"] = _rel_diff(outs[0], outs[1])
        from attnx.bench.reassoc import _median_ms  # one timing loop for the benchmarks

        row["before_ms"] = _median_ms(sessions[0], feeds, repeats, warmup=2)
        row["after_ms"] = _median_ms(sessions[1], feeds, repeats, warmup=2)
        row["ratio"] = row["after_ms"] / row["before_ms"]
        row["timed_shapes"] = {k: list(np.shape(v)) for k, v in feeds.items()}
    except NotInstalled as exc:
        row["status"] = str(exc)
    except Exception as exc:  # the row says which step failed and how; the other models still run
        row["status"] = f"failed at {stage}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return row


def add_arguments(parser) -> None:
    parser.add_argument("--models", action="list", choices=list(MODELS), metavar="MODEL",
                        help=f"models; repeat or comma-separate (default all: {','.join(MODELS)})")
    parser.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN,
                        help=f"sequence length N the graphs are timed at, batch 1 (default {DEFAULT_SEQ_LEN})")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per graph; median (default 10)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads (default 0: its default, one per core)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the rows as JSON")


def _cell(row, key, fmt):
    return format(row[key], fmt) if key in row else "-"


def run(args) -> int:
    from attnx.errors import AttnxError
    from attnx.files import check_output_path, write_text
    from attnx.progress import warn

    if args.json:
        check_output_path(args.json, "--json")
    if args.seq_len < 2 or args.repeats < 1 or args.threads < 0:
        raise AttnxError(f"expected --seq-len >= 2, --repeats >= 1 and --threads >= 0, found {args.seq_len}, "
                         f"{args.repeats}, {args.threads}")
    names = list(dict.fromkeys(args.models or MODELS))
    threads = "default threads" if args.threads == 0 else f"{args.threads} thread{'s' * (args.threads > 1)}"
    print(f"ONNX Runtime CPU ({threads}), batch 1, N = {args.seq_len}, median of {args.repeats} runs after 2 "
          f"warm-ups; ratio = after/before")
    print(f"{'model':<16} {'before ms':>10} {'after ms':>10} {'ratio':>7} {'optimize s':>10} {'rel diff':>9}  "
          f"fused (export)")
    rows = []
    for name in names:
        row = measure(name, args.seq_len, args.repeats, args.threads)
        rows.append(row)
        if row["status"] != "ok":
            print(f"{name:<16} {row['status']}")
            continue
        flag = "" if row["rel_diff"] <= RTOL else " ⚠"
        print(f"{name:<16} {_cell(row, 'before_ms', '10.2f')} {_cell(row, 'after_ms', '10.2f')} "
              f"{_cell(row, 'ratio', '6.2f')}x {_cell(row, 'optimize_s', '10.2f')} {row['rel_diff']:>9.1e}{flag}  "
              f"{', '.join(row['fused']) or 'nothing'} ({row['export']})")
    off = [r["model"] for r in rows if r["status"] == "ok" and r["rel_diff"] > RTOL]
    if off:
        warn("attnx bench fusion", f"outputs after optimize differ from before by more than {RTOL:g} relative: "
                                   f"{', '.join(off)}")
    if args.json:
        for row in rows:  # JSON has no inf: a NaN on one side only, or another shape, is null
            if "rel_diff" in row and not math.isfinite(row["rel_diff"]):
                row["rel_diff"] = None
        write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0
