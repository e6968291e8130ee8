"""Progress lines for steps that take longer than a second, on stderr so stdout stays clean."""

from __future__ import annotations

import contextlib
import sys
import time


class Progress:
    def __init__(self, total_steps: int = 0, stream=None, enabled: bool = True):
        self.total, self.done = total_steps, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled

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
