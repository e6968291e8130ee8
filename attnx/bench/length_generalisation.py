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
"""

from __future__ import annotations

import copy
import json
import math

import torch

from attnx.errors import AttnxError, ModelNotFoundError
from attnx.files import check_output_path, write_text
from attnx.models import ZOO, load_model
from attnx.models.gau import GAU, length_norm
from attnx.models.softmax_attention import SoftmaxAttention, length_scale

DEFAULT_MODELS = ("gau-n-tiny", "gau-softmax-tiny", "softmax-tiny")


def add_arguments(p) -> None:
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help="zoo language models whose first block is GAU or softmax attention")
    p.add_argument("--base-length", type=int, default=64, help="the length seen (default 64)")
    p.add_argument("--factors", nargs="+", type=int, default=[4, 16], help="longer lengths, as multiples")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")


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
    if args.json:
        check_output_path(args.json, "--json")
    unknown = [m for m in args.models if m not in ZOO]
    if unknown:
        raise AttnxError(f"unknown model(s) {', '.join(unknown)}; expected zoo names ({', '.join(ZOO)})")
    if args.base_length < 2 or min(args.factors) < 2:
        raise AttnxError(f"--base-length must be >= 2 and --factors >= 2, got {args.base_length} and {args.factors}")
    rows = [r for m in args.models for r in measure(m, args.base_length, args.factors, args.batch, args.seed)]
    print(f"length generalisation: first block's attention, eager float64, baseline length {args.base_length}, "
          f"batch {args.batch}, seed {args.seed}")
    print(table(rows))
    if args.json:
        write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0
