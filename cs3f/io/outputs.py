"""The batch's result table and safe file writing.

Rows are one per study found, scored or not. Files are written to a temporary name in the target
folder and renamed into place, so a reader never sees half a file and a crash never leaves one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cs3f.decisions import Calibration

__all__ = [
    "IDENTIFYING",
    "STATUSES",
    "StudyRow",
    "atomic_path",
    "pseudonym",
    "rank",
    "sanitise",
    "scores_csv",
    "scores_json",
    "study_keys",
    "write_text",
]

STATUSES = ("scored", "skipped", "failed")
IDENTIFYING = ("patient_id", "patient_name", "accession_number")
"""Row fields written out only when a run asks for them (``show_identifiers``)."""
CSV_COLUMNS = (
    "rank",
    "pseudonym",
    "study_date",
    *IDENTIFYING,
    "study_instance_uid",
    "series_instance_uid",
    "score",
    "batch_percentile",
    "flagged",
    "status",
    "reason",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise(value: str, fallback: str) -> str:
    """``value`` as a safe file-name stem: [A-Za-z0-9._-] only, no leading dot, at most 64
    characters; ``fallback`` when nothing is left."""
    cleaned = _UNSAFE.sub("_", str(value or "")).lstrip(".")[:64]
    return cleaned if cleaned.strip("_") else fallback


def study_keys(values: Sequence[str], fallback: str) -> list[str]:
    """Collision-free file-name stems for a batch's studies, one per value, in order.

    A value that is already a safe stem (a valid UID) and unique in the batch is its own key.
    Any other value (one :func:`sanitise` changes, or whose sanitised form another value
    shares) gets its sanitised form cut to 55 characters, ``-`` and 8 hex digits of the raw
    value's SHA-256; a key still taken (a value repeated in the batch) gets ``-2``, ``-3``, ...
    So two studies never share an output or work file.
    """
    cleaned = [sanitise(v, fallback) for v in values]
    shared = Counter(cleaned)
    keys: list[str] = []
    for value, clean in zip(values, cleaned, strict=True):
        key = clean
        if clean != value or shared[clean] > 1:
            key = f"{clean[:55]}-{hashlib.sha256(str(value).encode()).hexdigest()[:8]}"
        stem, copy = key, 1
        while key in keys:
            copy += 1
            key = f"{stem}-{copy}"
        keys.append(key)
    return keys


def pseudonym(key: str) -> str:
    """A study's pseudonymous tag: 8 hex digits of the SHA-256 of its key (:func:`study_keys`)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@dataclass
class StudyRow:
    """One study of the batch. ``key`` names its output files (:func:`study_keys`);
    ``pseudonym`` (8 hex digits of the key's SHA-256, the study's tag in run.log) names it in
    the report; ``study_date`` is DICOM's YYYYMMDD written YYYY-MM-DD."""

    key: str
    study_instance_uid: str
    series_instance_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    accession_number: str = ""
    study_date: str = ""
    status: str = "scored"
    reason: str = ""
    score: float | None = None
    batch_percentile: float | None = None
    flagged: bool = False
    rank: int | None = None
    details: dict = field(default_factory=dict)
    pseudonym: str = ""

    def __post_init__(self) -> None:
        self.pseudonym = self.pseudonym or pseudonym(self.key)

    def fail(self, status: str, reason: str) -> None:
        """Mark the study ``skipped`` or ``failed`` with a reason; it keeps its row."""
        if status not in STATUSES[1:]:
            raise ValueError(f"status must be skipped or failed, got {status!r}")
        self.status, self.reason, self.score = status, reason, None

    def as_dict(self, show_identifiers: bool = False) -> dict:
        """The row's fields; patient ID, name and accession number only if asked for."""
        values = asdict(self)
        return (
            values
            if show_identifiers
            else {k: v for k, v in values.items() if k not in IDENTIFYING}
        )


def rank(rows: Sequence[StudyRow], calibration: Calibration | None) -> list[StudyRow]:
    """Rank scored rows by score (highest first), others after them; fill each scored row's
    batch percentile and flag from ``calibration`` (:class:`~cs3f.screening.Calibration`,
    ``None`` when the batch could not be scored: then no row is scored)."""
    scored = sorted(
        (r for r in rows if r.status == "scored"), key=lambda r: (-r.score, r.study_instance_uid)
    )
    others = sorted((r for r in rows if r.status != "scored"), key=lambda r: (r.status, r.key))
    for position, row in enumerate(scored, start=1):
        row.rank = position
        row.batch_percentile = calibration.percentile(row.score)
        row.flagged = calibration.flagged(row.score)
    for row in others:
        row.rank, row.batch_percentile, row.flagged = None, None, False
    return scored + others


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str | int | float | bool:
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula (a
    patient ID or a reason copied from the input) gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return f"'{value}"
    return value


def scores_csv(rows: Sequence[StudyRow], show_identifiers: bool = False) -> str:
    """The ``scores.csv`` text for ranked rows; the :data:`IDENTIFYING` columns only with
    ``show_identifiers``. Text cells are neutralised against formula injection (:func:`_cell`),
    numbers are written as they are."""
    columns = [c for c in CSV_COLUMNS if show_identifiers or c not in IDENTIFYING]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        values = {c: _cell(v) for c, v in row.as_dict(show_identifiers).items()}
        values["score"] = "" if row.score is None else f"{row.score:.6g}"
        writer.writerow([values[c] for c in columns])
    return buffer.getvalue()


def scores_json(rows: Sequence[StudyRow], run: dict, show_identifiers: bool = False) -> str:
    """The ``scores.json`` text: ``{"run": run, "studies": [row, ...]}`` (rows as
    :meth:`StudyRow.as_dict` gives them)."""
    studies = [r.as_dict(show_identifiers) for r in rows]
    return json.dumps({"run": run, "studies": studies}, indent=2, default=str)
