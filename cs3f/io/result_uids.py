"""The UIDs of the objects a job next to a PACS (``python -m app pacs``, ``listen``) derives from
a study (SEG, Parametric Map, SR), derived from what makes the result, so that running the same
job again names the same objects and can ask the PACS whether it holds them. (A plain run of
``python -m app`` gives its objects new UIDs: nothing there asks whether they exist.)

A result depends on the source study and the series screened in it, this program's version,
everything that changes a score (the encoder and its weights, every token, scoring, decision and
preprocessing setting: the run's *identity*, as a reference bank stores it), what chooses the
series (the series-selection rules, and the series the job retrieves: the query's modality and
body part) and what the study is compared with: a reference bank (its content: a bank grown or
pruned is another reference) or the batch. The batch's composition is not part of it: a study
keeps one result per settings whichever batch screened it (a job that finds the result already
in the PACS does not send it again), although the numbers in it depend on that batch. Each UID
is ``2.25.<integer>`` of a name-based UUID (version 5) of that description: the UUID-derived
form of ISO/IEC 9834-8 that DICOM accepts as a UID (PS3.5 B.2), unique without a registered root.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RESULTS", "DerivedUIDs", "derived_uid", "result_uids", "results_seed"]

RESULTS = ("seg", "map", "sr")
"""The objects a DICOM study's screening derives: its SEG, score map and structured report."""
_LEVELS = ("series", "instance")
_NAMESPACE = uuid.UUID("8d7c3b4e-3f9a-5d2e-9c1b-c53f0a9e1d27")  # this program's, fixed forever


@dataclass(frozen=True)
class DerivedUIDs:
    """The series and SOP instance UIDs of one derived object."""

    series: str
    instance: str


def derived_uid(name: str) -> str:
    """``2.25.<integer>`` of the name-based UUID of ``name`` in this program's namespace: the
    same name always gives the same UID, two names two different ones."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def results_seed(version: str, identity: Mapping, reference: str, selection: Mapping) -> str:
    """The run's part of every derived UID: 64 hex digits of the SHA-256 of ``version``, the
    run's ``identity`` (JSON-like), ``reference`` (``"batch"``, or a bank's fingerprint) and
    ``selection`` (what chooses the series: the rules' SHA-256, the series retrieved)."""
    text = json.dumps(
        {"version": version, "identity": identity, "reference": reference, "selection": selection},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def result_uids(seed: str, study_uid: str, series_uid: str) -> dict[str, DerivedUIDs]:
    """Per object of :data:`RESULTS`, its UIDs for the series ``series_uid`` of the study
    ``study_uid`` under ``seed`` (:func:`results_seed`): the same arguments always give the
    same UIDs."""
    base = f"{seed}/{study_uid}/{series_uid}"
    return {
        kind: DerivedUIDs(*(derived_uid(f"{base}/{kind}/{level}") for level in _LEVELS))
        for kind in RESULTS
    }
