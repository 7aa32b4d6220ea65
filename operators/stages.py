"""What flows between the operators: one small dataclass per hand-over, named in ``compose()``.

    StudiesFound     -> volume     -> SourceVolumes  (NIfTI input starts here)
    SourceVolumes    -> preprocess -> StandardVolumes
    StandardVolumes  -> screen     -> Screened
    Screened         -> outputs    -> Written
    Written          -> report     (scores.csv, scores.json, report.html)

Each carries the run's :class:`Ledger` (one row per study found, run-level facts) and the studies
still in the running; a study that fails a stage keeps its row in the ledger and drops out of the
next hand-over. Large arrays are read-only memmaps in the run's work folder (created and removed
by the entry point), so a batch of hundreds of studies does not sit in RAM between stages.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cs3f.decisions import Calibration
from cs3f.io.outputs import StudyRow
from cs3f.io.report import StudyFigure
from cs3f.preprocess.standard_space import Standardised
from cs3f.progress import Progress
from cs3f.redaction import IDENTIFIERS
from cs3f.screening import Screening
from cs3f.volume import Volume

LOG = logging.getLogger("cs3f.app")
In = TypeVar("In")
Out = TypeVar("Out")


def register(row: StudyRow, *values: object) -> None:
    """Register the study's identifiers (its row's UIDs, IDs and key, plus ``values``, e.g.
    the patient's name and birth date) so that logs and reasons show its tag instead."""
    identifiers = (row.study_instance_uid, row.series_instance_uid, row.patient_id)
    IDENTIFIERS.add(
        (*identifiers, row.accession_number, row.key, *values), f"<study {row.pseudonym}>"
    )


def redact(text: str, row: StudyRow) -> str:
    """``text`` (an exception's message or traceback) with the study's identifiers replaced by
    its tag, and any UID or quoted value hidden (see :mod:`cs3f.redaction`)."""
    register(row)
    return IDENTIFIERS.redact(text, quoted=True)


@dataclass
class Ledger:
    """The run's record: every study's row (scored or not) and run-level facts for the outputs.

    Attributes:
        input_format: ``"dicom"`` or ``"nifti"``.
        work: the run's work folder (memmaps of volumes, maps and tokens).
        rows: one per study found, in a stable order.
        intake: counts of the files read (see the loaders).
        timings: seconds per stage.
        warnings: batch-level warnings, for the log and scores.json.
        error: why the batch as a whole could not be scored ("" when it could).
    """

    input_format: str
    work: Path
    rows: list[StudyRow] = field(default_factory=list)
    intake: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str = ""

    def each(
        self,
        stage: str,
        items: Sequence[In],
        row_of: Callable[[In], StudyRow],
        work: Callable[[In], Out],
    ) -> list[Out]:
        """``work`` on every item, in order; returns the results of those that succeeded.

        A failure marks that study's row failed with a one-line reason, logs the traceback (the
        study by its pseudonymous tag only) and the rest go on.
        """
        progress = Progress(LOG, stage, len(items))
        start = time.perf_counter()
        done = []
        for item in items:
            row = row_of(item)
            try:
                done.append(work(item))
            except Exception as exc:  # noqa: BLE001  (one bad study never takes the batch down)
                row.fail("failed", redact(f"{stage}: {type(exc).__name__}: {exc}", row))
                LOG.warning("study %s failed in %s: %s", row.pseudonym, stage, type(exc).__name__)
                LOG.debug(
                    "study %s, %s:\n%s", row.pseudonym, stage, redact(traceback.format_exc(), row)
                )
            progress.step()
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start
        return done

    def refuse(self, error: str, rows: Sequence[StudyRow] = (), reason: str = "") -> None:
        """The batch as a whole cannot be scored: ``error`` says why, and each of ``rows`` still
        in the running fails with ``reason``."""
        self.error = error
        for row in rows:
            if row.status == "scored":
                row.fail("failed", reason)

    def park(self, row: StudyRow, name: str, array: np.ndarray) -> np.ndarray:
        """Save one of a study's arrays to the work folder and return it as a read-only memmap;
        it goes into a folder named after the study's key, which no other study shares."""
        path = self.work / "studies" / row.key / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
        return np.load(path, mmap_mode="r")


@dataclass
class FoundStudy:
    """A study found in the input, its series chosen: ``series`` is the SDK's DICOMSeries."""

    row: StudyRow
    series: Any


@dataclass
class SourceStudy:
    """A study's source volume with its affine; ``slices`` are its DICOM datasets (the SEG
    references them), ``None`` for NIfTI input."""

    row: StudyRow
    source: Volume
    slices: list | None = None


@dataclass
class StandardStudy:
    """A study in standard space: its regions, each with the way back to ``source``."""

    source: SourceStudy
    regions: list[Standardised]

    @property
    def row(self) -> StudyRow:
        return self.source.row


@dataclass
class ScoredStudy:
    """A screened study: its index in the screening and its standard-space maps per region."""

    standard: StandardStudy
    index: int
    maps: dict[str, np.ndarray]

    @property
    def row(self) -> StudyRow:
        return self.standard.row


@dataclass
class StudiesFound:
    ledger: Ledger
    studies: list[FoundStudy]


@dataclass
class SourceVolumes:
    ledger: Ledger
    studies: list[SourceStudy]


@dataclass
class StandardVolumes:
    ledger: Ledger
    studies: list[StandardStudy]


@dataclass
class Screened:
    """The scored studies and the batch's calibration (``None`` when the batch failed: see
    ``ledger.error``)."""

    ledger: Ledger
    studies: list[ScoredStudy]
    screening: Screening | None
    calibration: Calibration | None


@dataclass
class Written:
    """The outputs are on disk; ``figures`` are the report's images by study key."""

    ledger: Ledger
    calibration: Calibration | None
    figures: dict[str, StudyFigure]
