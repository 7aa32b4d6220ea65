"""A job's result objects back to the PACS (C-STORE), each study's all or nothing as far as
DICOM allows, and none twice.

Every file is read before the association is opened (one that cannot be read: nothing is sent),
and the association must have accepted every SOP class about to be sent (a PACS that takes SEGs
but not SRs gets neither). Per study, the objects the PACS already holds (a SERIES-level C-FIND
on their series UIDs, which derive from the study, its source series and the settings) are
skipped, the rest go in order (the SEG before the SR that references it), and the first one
refused stops that study: a C-STORE cannot be taken back, so a study whose SEG was stored and
whose SR then failed is reported as such, and a later run sends just its SR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from cs3f.pacs import PacsError
from cs3f.pacs.config import PacsSettings
from cs3f.pacs.network import association, find_context, is_present, status_text

__all__ = ["Sent", "send_results"]

STORED = (0x0000, 0xB000, 0xB006, 0xB007)  # success, and the warnings that still store


@dataclass
class Sent:
    """What became of one study's result objects.

    Attributes:
        sent: SOP instance UIDs stored now.
        present: those the PACS already held (not sent again).
        error: why the rest were not sent ("" when none is missing).
    """

    sent: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    error: str = ""


def _send_study(assoc: Association, study_uid: str, datasets: Sequence[Dataset]) -> Sent:
    outcome = Sent()
    for dataset in datasets:
        uid = str(dataset.SOPInstanceUID)
        if is_present(assoc, study_uid, str(dataset.SeriesInstanceUID)):
            outcome.present.append(uid)
            continue
        status = assoc.send_c_store(dataset)
        code = status.get("Status") if status else None
        if code not in STORED:
            said = status_text(code, STORAGE_SERVICE_CLASS_STATUS)
            outcome.error = f"the PACS did not store the {dataset.Modality} ({said})"
            break
        outcome.sent.append(uid)
    return outcome


def send_results(
    settings: PacsSettings, studies: Mapping[str, Sequence[Path]]
) -> dict[str, Sent]:
    """Send each study's objects (``studies``: StudyInstanceUID -> DICOM files, in sending
    order) to the PACS on one association; returns what became of each study's.

    Raises:
        PacsUnavailable: no association: nothing was sent.
        PacsError: a file cannot be read, or the PACS does not accept one of the SOP classes
            to send: nothing was sent.
    """
    try:
        datasets = {uid: [dcmread(p) for p in paths] for uid, paths in studies.items()}
    except (OSError, InvalidDicomError) as exc:
        raise PacsError(f"cannot read a result to send: {exc}; nothing was sent") from exc
    classes = sorted({str(ds.SOPClassUID) for found in datasets.values() for ds in found})
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    contexts = [find_context(), *(build_context(c, syntaxes) for c in classes)]
    outcomes: dict[str, Sent] = {}
    with association(settings, contexts) as assoc:
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        refused = [c for c in classes if c not in accepted]
        if refused:
            raise PacsError(
                f"the PACS does not accept the storage of {', '.join(refused)}; nothing was sent"
            )
        for study_uid, found in datasets.items():
            try:
                outcomes[study_uid] = _send_study(assoc, study_uid, found)
            except (RuntimeError, ValueError, AttributeError, OSError) as exc:
                # RuntimeError (PacsError too): the association is gone or the PACS failed a
                # query; ValueError, AttributeError: a dataset pynetdicom cannot send
                outcomes[study_uid] = Sent(error=f"sending stopped: {exc}")
    return outcomes
