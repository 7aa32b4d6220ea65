"""Console progress for long stages: done / total, rate and time left, at most every few seconds."""

from __future__ import annotations

import logging
import time

__all__ = ["Progress"]


class Progress:
    """``Progress(log, "tokenise", total)``, then ``.step()`` per item or ``.update(done)``."""

    def __init__(self, log: logging.Logger, stage: str, total: int, every_s: float = 5.0) -> None:
        self.log, self.stage, self.total, self.every_s = log, stage, max(total, 0), every_s
        self.start = self.last = time.perf_counter()
        self.done = 0

    def step(self) -> None:
        self.update(self.done + 1)

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        self.total = self.total if total is None else total
        now = time.perf_counter()
        if done < self.total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else float("nan")
        self.log.info(
            "%s: %d/%d (%.2f/s, %.0f s elapsed, %.0f s left)",
            self.stage,
            done,
            self.total,
            rate,
            elapsed,
            left,
        )
