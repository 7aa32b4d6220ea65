"""What flows between the operators: one Batch object, handed on and filled in stage by stage.

No SDK types are needed here; ``Case.series`` holds the SDK's DICOMSeries for DICOM input.
Large arrays live as memmaps in ``Batch.work`` (a folder inside the output, removed at the end),
so a batch of hundreds of studies does not sit in RAM between stages.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cs3f.outputs import StudyRow
from cs3f.progress import Progress
from cs3f.standard_space import Standardised
from cs3f.volume import Volume

LOG = logging.getLogger("cs3f.app")


@dataclass
class Case:
    """One study: its result row and, as stages run, its data."""

    row: StudyRow
    series: Any = None
    path: Path | None = None
    slices: list | None = None
    source: Volume | None = None
    regions: list[Standardised] = field(default_factory=list)
    indices: dict[str, int] = field(default_factory=dict)
    score_maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """A short pseudonymous label for logs: never the UID, name or ID in clear."""
        return hashlib.sha256(self.row.key.encode()).hexdigest()[:8]


@dataclass
class Batch:
    """The whole run: cases in a stable order, plus run-level facts for the outputs."""

    input_format: str
    work: Path
    cases: list[Case] = field(default_factory=list)
    intake: dict = field(default_factory=dict)
    scorers: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    figures: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str = ""

    def active(self) -> list[Case]:
        """Cases still in the running (status ``scored`` so far)."""
        return [c for c in self.cases if c.row.status == "scored"]

    def each(self, stage: str, work: Callable[[Case], None]) -> None:
        """Run ``work`` on every active case; a failure marks that case failed and the rest go on."""
        cases = self.active()
        progress = Progress(LOG, stage, len(cases))
        start = time.perf_counter()
        for case in cases:
            try:
                work(case)
            except Exception as exc:  # noqa: BLE001  (one bad study never takes the batch down)
                case.row.fail("failed", f"{stage}: {type(exc).__name__}: {exc}")
                LOG.warning("study %s failed in %s: %s", case.tag, stage, type(exc).__name__)
            progress.step()
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def park(self, name: str, array: np.ndarray) -> np.ndarray:
        """Save ``array`` to the work folder and return it as a read-only memmap."""
        path = self.work / f"{name}.npy"
        np.save(path, array)
        return np.load(path, mmap_mode="r")
