"""The training loop and the evaluation: deterministic on CPU for a seed and a thread count.

The weights are drawn from `torch.manual_seed(seed)`, the training batches from a generator seeded
with `seed` too, in deterministic algorithms, with a fixed number of intra-op threads (float
sums depend on how they are split): the same command gives the same weights, bit for bit, on
the same torch build.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

import attnx.train.autograd  # noqa: F401  (gradients through the custom ops)
from attnx.progress import Progress
from attnx.train.tasks import GENERATORS

EVAL_SEED = 1_000_003  # the evaluation's examples: never the training stream of a small seed
EVAL_EXAMPLES = 512    # at the training length; the benchmark uses fewer past it
EVAL_CHUNK = 16        # examples per forward: keeps [chunk, heads, N, N] small at 16× the length


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One run's settings (their defaults are the command's: attnx.cli.train)."""

    task: str
    seq_len: int
    steps: int
    seed: int
    batch: int
    lr: float
    threads: int
    weight_decay: float = 0.01


def answer_loss(module: nn.Module, ids: torch.Tensor, answers: torch.Tensor):
    """(mean cross-entropy of the last position's logits against `answers`, correct count)."""
    logits = module(ids)[:, -1]
    return nn.functional.cross_entropy(logits, answers), int((logits.argmax(-1) == answers).sum())


def evaluate(module: nn.Module, task: str, length: int, *, examples: int = EVAL_EXAMPLES,
             seed: int = EVAL_SEED) -> dict[str, float]:
    """{loss, accuracy, examples} of `module` on `examples` fresh examples of `task` at `length`,
    drawn from `seed` (the same seed draws the same examples whatever the module)."""
    generator = torch.Generator().manual_seed(seed)
    total_loss, correct, done = 0.0, 0, 0
    was_training = module.training
    module.eval()
    with torch.no_grad():
        while done < examples:
            size = min(EVAL_CHUNK, examples - done)
            ids, answers = GENERATORS[task](size, length, generator)
            loss, right = answer_loss(module, ids, answers)
            total_loss, correct, done = total_loss + float(loss) * size, correct + right, done + size
    module.train(was_training)
    return {"loss": total_loss / examples, "accuracy": correct / examples, "examples": examples}


def train(module: nn.Module, config: TrainConfig, progress: Progress | None = None) -> dict[str, float]:
    """Train `module` (its weights already drawn) in place; returns the metrics at the training length.
    The thread count and deterministic mode are the process's again afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(module, config, progress or Progress(enabled=False))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(module: nn.Module, config: TrainConfig, progress: Progress) -> dict[str, float]:
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 20)
    # linear warm-up, then cosine decay to a tenth
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / warmup) * (
        0.55 + 0.45 * math.cos(math.pi * min(1.0, step / config.steps))))
    module.train()
    start, report_every = time.perf_counter(), max(1, config.steps // 20)
    for step in range(1, config.steps + 1):
        ids, answers = GENERATORS[config.task](config.batch, config.seq_len, generator)
        loss, correct = answer_loss(module, ids, answers)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % report_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - start
            bar = "#" * (20 * step // config.steps)
            progress.note(f"[{bar:<20}] step {step}/{config.steps}  loss {float(loss.detach()):.3f}  "
                          f"acc {correct / config.batch:.2f}  {step * config.batch * config.seq_len / elapsed:,.0f} tok/s")
    module.eval()
    return evaluate(module, config.task, config.seq_len)
