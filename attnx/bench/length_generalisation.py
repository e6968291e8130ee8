"""Length generalisation: how attention rows and outputs change past the length a model has seen.

For each model the first block's attention runs (eager, float64) on the embeddings of one
random token sequence, cut at the baseline length (a length seen: the export and log-n
training length, 64 by default) and at 4× and 16× it. Per length:

- entropy: mean entropy (nats) of the attention rows, each normalised to sum to 1;
- mass: mean row sum before normalising (1 for softmax; relu²/n drifts with n);
- rms: RMS of the attention output A·V (before gating and output projection);
- drift: relative change of the output at the first baseline-length positions against the
  baseline run, ‖y_L[:L₀] − y_L₀‖ / ‖y_L₀‖: 0 when a position's output depends on its past
  only, as causal attention should.

Every row prints its ratio to the baseline length (Su's comparison of relu²/n GAU and softmax
with the log-n scale).

With `--trained` it measures the outcome beside the mechanism: each trained zoo model (shipped
checkpoints, attnx/models/trained/, trained at N = 64) is evaluated on its task at 1×, 2×, 4×,
8× and 16× the training length, for every training seed shipped: accuracy and loss on the
answer token, mean ± sample std over the seeds, with the entropy and drift of its seed-0
checkpoint's first block beside them (GAU and softmax attention; linear attention and FLASH have
no rows to read). `--plot` writes accuracy against length as a PNG.
"""

from __future__ import annotations

import copy
import json
import math

import torch

from attnx.errors import AttnxError, ModelNotFoundError
from attnx.files import atomic_output, check_output_path, write_text
from attnx.models import ZOO, load_model
from attnx.models.trained import read_checkpoint
from attnx.models.zoo import TRAINED
from attnx.train import tasks
from attnx.models.gau import GAU, length_norm
from attnx.models.softmax_attention import SoftmaxAttention, length_scale

# accuracy of a guess among the answers a task can have (attnx/train/tasks.py)
CHANCE = {"recall": 1 / tasks.VALUES, "copy": 1 / tasks.DATA}
DEFAULT_MODELS = ("gau-n-tiny", "gau-softmax-tiny", "softmax-tiny")


def add_arguments(p) -> None:
    p.add_argument("--models", action="list", default=None,
                   help="zoo language models whose first block is GAU or softmax attention (default "
                        f"{','.join(DEFAULT_MODELS)}; with --trained: trained entries, default all of them)")
    p.add_argument("--trained", action="store_true",
                   help="task accuracy and loss of the shipped trained checkpoints at each length, mean ± std over "
                        "their training seeds, beside the entropy and drift")
    p.add_argument("--base-length", type=int, default=None,
                   help="the length seen (default 64; with --trained the training length each checkpoint records)")
    p.add_argument("--factors", action="list", type=int, default=None,
                   help="longer lengths, as multiples (default 4,16; with --trained 1,2,4,8,16)")
    p.add_argument("--examples", type=int, default=64,
                   help="with --trained: evaluation examples per length and checkpoint (default 64)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--plot", metavar="PNG", help="with --trained: write accuracy against length as a PNG")


def attention_rows(attention, x):
    """(weights [B, H, N, N] as the attention applies them, their output A·V [B, H, N, E]) for GAU or softmax."""
    n = x.shape[1]
    if isinstance(attention, GAU):
        _, v, q, k = attention.project(x)
        v = v.unsqueeze(1)
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        if attention.attention == "softmax":
            scores = scores * length_scale(n, causal=attention.causal, n_train=attention.n_train, dtype=x.dtype)
            weights = _softmax(scores, attention.causal)
        else:
            s = attention.relu2
            lengths = length_norm(n, causal=s["causal"], norm=s["norm"], fixed_length=s["fixed_length"], dtype=x.dtype)
            weights = (torch.relu(scores / lengths).square() if s["norm_placement"] == "inside"
                       else torch.relu(scores).square() / lengths)
            weights = weights.tril() if s["causal"] else weights
    elif isinstance(attention, SoftmaxAttention):
        q, k, v = attention.project(x)
        weights = _softmax(q @ k.transpose(-1, -2) * attention.scale, attention.causal)
    else:
        raise ModelNotFoundError(f"length-generalisation reads attention rows of GAU and SoftmaxAttention, "
                                 f"got {type(attention).__name__}")
    return weights, weights @ v


def _softmax(scores, causal):
    if causal:
        n = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, -1)


def measure(model: str, base: int, factors, batch: int, seed: int) -> list[dict]:
    loaded = load_model(model)
    lm = copy.deepcopy(loaded.module).double().eval()
    if not hasattr(lm, "blocks"):
        raise ModelNotFoundError(f"{model}: length-generalisation needs a zoo language model, got "
                                 f"{type(lm).__name__}")
    block = lm.blocks[0]
    longest = base * max(factors)
    ids = torch.randint(0, lm.vocab_size, (batch, longest), generator=torch.Generator().manual_seed(seed))
    rows, baseline = [], None
    with torch.no_grad():
        h = block.norm1(lm.embed(ids))
        for length in [base, *(base * f for f in factors)]:
            weights, y = attention_rows(block.attention, h[:, :length])
            mass = weights.sum(-1, keepdim=True)
            p = weights / mass.clamp_min(1e-300)
            entropy = float(-(p * p.clamp_min(1e-300).log()).sum(-1).mean())
            if baseline is None:
                baseline = y
            drift = float((y[:, :, :base] - baseline).norm() / baseline.norm())
            rows.append({"model": model, "length": length, "entropy": entropy, "log_length": math.log(length),
                         "mass": float(mass.mean()), "rms": float(y.square().mean().sqrt()), "drift": drift})
    for row in rows:
        for key in ("entropy", "mass", "rms"):
            row[f"{key}_ratio"] = row[key] / rows[0][key] if rows[0][key] else float("nan")
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<18} {'length':>6} {'×':>4}  {'entropy':>8} {'ratio':>6} {'log n':>6}  {'mass':>9} "
             f"{'ratio':>7}  {'rms':>8} {'ratio':>6}  {'drift':>8}"]
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"])
        lines.append(f"{r['model']:<18} {r['length']:>6} {r['length'] // base['length']:>4}  {r['entropy']:>8.3f} "
                     f"{r['entropy_ratio']:>6.2f} {r['log_length']:>6.2f}  {r['mass']:>9.3e} {r['mass_ratio']:>7.3f}  "
                     f"{r['rms']:>8.4f} {r['rms_ratio']:>6.2f}  {r['drift']:>8.2e}")
    return "\n".join(lines)


def run(args) -> int:
    for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
        if path:
            check_output_path(path, flag)
    if args.trained:
        if args.plot:
            from attnx.bench.stream import _pyplot

            _pyplot()  # before the evaluation: a missing matplotlib is exit 2 and costs nothing
        return run_trained(args)
    if args.plot:
        raise AttnxError("--plot draws the accuracy of trained models: expected --trained with it")
    models = args.models or list(DEFAULT_MODELS)
    base, factors = args.base_length or 64, args.factors or [4, 16]
    unknown = [m for m in models if m not in ZOO]
    if unknown:
        raise AttnxError(f"unknown model(s) {', '.join(unknown)}; expected zoo names ({', '.join(ZOO)})")
    if base < 2 or min(factors) < 2:
        raise AttnxError(f"--base-length must be >= 2 and --factors >= 2, got {base} and {factors}")
    rows = [r for m in models for r in measure(m, base, factors, args.batch, args.seed)]
    print(f"length generalisation: first block's attention, eager float64, baseline length {base}, "
          f"batch {args.batch}, seed {args.seed}")
    print(table(rows))
    if args.json:
        write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


def evaluate_trained(name: str, factors, examples: int, batch: int, seed: int) -> list[dict]:
    """Rows per length of trained model `name`: accuracy and loss per shipped training seed, their
    mean and std, and the entropy and drift of the seed-0 checkpoint (None where not readable)."""
    from attnx.models.trained import checkpoint_path, load_into, shipped_seeds
    from attnx.train.loop import evaluate

    base_name = TRAINED[name]
    seeds = shipped_seeds(name)
    if not seeds:
        raise AttnxError(f"{name}: expected shipped checkpoints ({checkpoint_path(name)}), found none")
    per_seed, train_len, task = {}, None, None
    for train_seed in seeds:
        path = checkpoint_path(name, train_seed)
        module = load_into(ZOO[base_name].build(), path, base_name).eval()
        record = read_checkpoint(path)[1]
        train_len, task = record["seq_len"], record["task"]
        per_seed[train_seed] = [evaluate(module, task, train_len * f, examples=examples) for f in factors]
    longer = [f for f in factors if f > 1]
    mechanism = {}
    if isinstance(load_model(name).module.blocks[0].attention, (GAU, SoftmaxAttention)) and longer:
        mechanism = {r["length"]: r for r in measure(name, train_len, longer, batch, seed)}
    rows = []
    for i, factor in enumerate(factors):
        acc = torch.tensor([per_seed[s][i]["accuracy"] for s in seeds], dtype=torch.float64)
        loss = torch.tensor([per_seed[s][i]["loss"] for s in seeds], dtype=torch.float64)
        spread = (lambda t: float(t.std())) if len(seeds) > 1 else (lambda t: None)  # one seed: no spread
        m = mechanism.get(train_len * factor, {})
        rows.append({"model": name, "task": task, "train_length": train_len, "length": train_len * factor,
                     "factor": factor, "seeds": seeds, "examples": examples,
                     "accuracy": [float(a) for a in acc], "loss": [float(v) for v in loss],
                     "accuracy_mean": float(acc.mean()), "accuracy_std": spread(acc),
                     "loss_mean": float(loss.mean()), "loss_std": spread(loss),
                     "entropy": m.get("entropy"), "drift": m.get("drift")})
    return rows


def trained_table(rows: list[dict]) -> str:
    lines = [f"{'model':<22} {'length':>6} {'×':>3} {'seeds':>5}  {'accuracy':>13}  {'loss':>13}  "
             f"{'entropy':>7} {'drift':>8}"]
    for r in rows:
        entropy = f"{r['entropy']:>7.3f}" if r["entropy"] is not None else f"{'—':>7}"
        drift = f"{r['drift']:>8.2e}" if r["drift"] is not None else f"{'—':>8}"
        acc, loss = (f"{r[f'{k}_mean']:>6.3f} ± " + (f"{r[f'{k}_std']:<5.3f}" if r[f"{k}_std"] is not None
                                                       else f"{'—':<5}") for k in ("accuracy", "loss"))
        lines.append(f"{r['model']:<22} {r['length']:>6} {r['factor']:>3} {len(r['seeds']):>5}  {acc}  {loss}  "
                     f"{entropy} {drift}")
    return "\n".join(lines)


def plot(rows: list[dict], path) -> None:
    """Accuracy (mean ± std over training seeds) against length, one line per model, as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        axes.errorbar([r["length"] for r in mine], [r["accuracy_mean"] for r in mine],
                      yerr=[r["accuracy_std"] or 0.0 for r in mine], marker="o", capsize=3, label=name)
    axes.set_xscale("log", base=2)
    lengths = sorted({r["length"] for r in rows})
    axes.set_xticks(lengths, [str(n) for n in lengths])
    chance = CHANCE.get(rows[0]["task"])
    if chance:
        axes.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
    axes.set_xlabel("evaluation length (trained at %d)" % rows[0]["train_length"])
    axes.set_ylabel(f"{rows[0]['task']} accuracy")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    with atomic_output(path) as staged:
        figure.savefig(staged, format="png")
    plt.close(figure)


def run_trained(args) -> int:
    models = args.models or list(TRAINED)
    unknown = [m for m in models if m not in TRAINED]
    if unknown:
        raise AttnxError(f"--trained: unknown trained model(s) {', '.join(unknown)}; expected {', '.join(TRAINED)}")
    if args.base_length is not None:
        raise AttnxError("--trained evaluates at multiples of each checkpoint's training length: expected no "
                         f"--base-length, found {args.base_length}")
    factors = args.factors or [1, 2, 4, 8, 16]
    if min(factors) < 1 or args.examples < 1:
        raise AttnxError(f"--factors must be >= 1 and --examples >= 1, got {factors} and {args.examples}")
    rows = [r for m in models for r in evaluate_trained(m, factors, args.examples, args.batch, args.seed)]
    print(f"length generalisation of the trained models: {rows[0]['task']} accuracy and loss on the answer token, "
          f"{args.examples} examples per length and checkpoint, mean ± sample std over the training seeds; entropy "
          f"and drift of the seed-0 checkpoint's first block (batch {args.batch}, seed {args.seed})")
    print(trained_table(rows))
    if args.json:
        write_text(args.json, json.dumps(rows, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0
