"""`attnx train MODEL --task TASK -o CKPT`: train a zoo language model on a synthetic task (CPU, deterministic)."""

from __future__ import annotations

import shlex

from attnx.cli.options import add_seed, at_least

DEFAULTS = {"seq_len": 64, "steps": 2500, "batch": 32, "lr": 3e-3, "threads": 1}


def add_parser(subparsers) -> None:
    from attnx.train import TASKS

    p = subparsers.add_parser("train", help="train a zoo language model on a synthetic task; write a safetensors "
                                            "checkpoint")
    p.add_argument("model", help="a zoo language model (`attnx zoo`); its weights are drawn from --seed")
    p.add_argument("--task", required=True, choices=list(TASKS),
                   help="; ".join(f"{name}: {text}" for name, text in TASKS.items()))
    p.add_argument("--seq-len", type=at_least(2), default=DEFAULTS["seq_len"],
                   help=f"training length (default {DEFAULTS['seq_len']})")
    p.add_argument("--steps", type=at_least(1), default=DEFAULTS["steps"], help=f"default {DEFAULTS['steps']}")
    p.add_argument("--batch", type=at_least(1), default=DEFAULTS["batch"], help=f"default {DEFAULTS['batch']}")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help=f"AdamW peak learning rate (default "
                                                                     f"{DEFAULTS['lr']})")
    p.add_argument("--threads", type=at_least(1), default=DEFAULTS["threads"],
                   help="intra-op threads (recorded: float sums, so the weights, depend on it; default 1)")
    add_seed(p, default=0, of="the initial weights and the training batches")
    p.add_argument("-o", "--output", required=True, metavar="CKPT", help="the safetensors checkpoint to write")
    p.set_defaults(run=run)


def command(args) -> str:
    """The command line that reproduces this run, every training option spelled out."""
    return shlex.join(["attnx", "train", args.model, "--task", args.task, "--seq-len", str(args.seq_len),
                       "--steps", str(args.steps), "--batch", str(args.batch), "--lr", repr(args.lr),
                       "--threads", str(args.threads), "--seed", str(args.seed), "-o", args.output])


def run(args) -> int:
    from attnx.errors import InputError
    from attnx.files import check_output_path
    from attnx.models import ZOO
    from attnx.progress import Progress
    from attnx.train.checkpoint import save
    from attnx.train.loop import TrainConfig, train

    check_output_path(args.output, "-o")
    if args.model not in ZOO:
        raise InputError(f"unknown model {args.model!r}: expected a zoo language model ({', '.join(ZOO)})")
    if not 0 < args.lr < 1:
        raise InputError(f"--lr: expected a learning rate in (0, 1), found {args.lr}")
    import torch

    entry = ZOO[args.model]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        module = entry.build()
    if not hasattr(module, "vocab_size"):
        raise InputError(f"{args.model}: expected a zoo language model (token ids in, logits out), found a "
                         f"{type(module).__name__}")
    config = TrainConfig(task=args.task, seq_len=args.seq_len, steps=args.steps, seed=args.seed, batch=args.batch,
                         lr=args.lr, threads=args.threads)
    progress = Progress(1)
    with progress.step(f"train {args.model} on {args.task} at N = {args.seq_len}, {args.steps} steps of "
                       f"{args.batch}, seed {args.seed}, {args.threads} thread(s)"):
        metrics = train(module, config, progress)
    save(args.output, module, {"model": args.model, "task": args.task, "seq_len": args.seq_len, "steps": args.steps,
                               "seed": args.seed, "batch": args.batch, "lr": args.lr, "threads": args.threads,
                               "command": command(args), "metrics": metrics})
    print(f"{args.model} on {args.task} at N = {args.seq_len}: loss {metrics['loss']:.4f}, accuracy "
          f"{metrics['accuracy']:.3f} ({metrics['examples']} held-out examples); wrote {args.output}")
    return 0
