"""Preprocessing of many studies at once: one worker process per study, each single-threaded.

Registration already runs ITK on one thread for determinism (:mod:`cs3f.preprocess.registration`);
the workers also hold torch (deepbet, lungmask) to one thread, so a study's result does not
depend on how many workers run or on which one it lands: 1 and N workers give the same bytes.
Throughput grows with the cores: N workers take about N times one study's memory.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from cs3f.preprocess import preprocess
from cs3f.preprocess.standard_space import PreprocessSettings
from cs3f.volume import Volume

__all__ = ["preprocess_all", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def _single_threaded() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def preprocess_all(
    volumes: Sequence[Volume], task: str, settings: PreprocessSettings, workers: int
) -> Iterator[Future]:
    """One future per volume, in order; ``.result()`` is its regions (a list of
    :class:`~cs3f.preprocess.standard_space.Standardised`) or raises its error.

    ``workers`` processes (started fresh, not forked from this multi-threaded process) run
    at most ``workers`` studies ahead of the consumer, so finished results wait in memory for at
    most that many studies. The pool stops when the iterator is exhausted or closed.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded)
    pending: deque[Future] = deque()
    try:
        for volume in volumes:
            pending.append(pool.submit(preprocess, volume, task, settings))
            if len(pending) > workers:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    except BaseException:  # closed early or interrupted: studies not started are dropped
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
