"""Progress lines for steps that take longer than a second, on stderr so stdout stays clean."""

from __future__ import annotations

import contextlib
import sys
import time


def warn(where: str, message: str) -> None:
    """One warning line on stderr, `where: warning: message` (where: `attnx convert`): for a flag that is
    accepted but has no effect in the combination given, and the like."""
    print(f"{where}: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


QUIET, NORMAL, VERBOSE = -1, 0, 1  # -q: the verdict lines, warnings and errors only; -v: the libraries' details too


class Progress:
    """Step and note lines at `verbosity` (QUIET prints none; `enabled=False` is QUIET)."""

    def __init__(self, total_steps: int = 0, stream=None, enabled: bool = True, verbosity: int = NORMAL):
        self.total, self.done = total_steps, 0
        self.stream = stream or sys.stderr
        self.verbosity = verbosity if enabled else QUIET
        self.enabled = self.verbosity > QUIET

    def note(self, message: str) -> None:
        if self.enabled:
            print(f"    {message}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, title: str):
        """Announce a step, then report how long it took (or that it failed)."""
        self.done += 1
        counter = f"[{self.done}/{self.total}] " if self.total else ""
        if self.enabled:
            print(f"{counter}{title} ...", file=self.stream, flush=True)
        start = time.perf_counter()
        try:
            yield self
        except BaseException:
            if self.enabled:
                print(f"{counter}{title}: failed after {time.perf_counter() - start:.1f} s", file=self.stream, flush=True)
            raise
        if self.enabled:
            print(f"{counter}{title}: done in {time.perf_counter() - start:.1f} s", file=self.stream, flush=True)
