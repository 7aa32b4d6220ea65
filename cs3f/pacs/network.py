"""Associations with the PACS (pynetdicom), and the C-FIND queries the jobs need.

:func:`association` opens one and turns each way it can fail into a :class:`PacsUnavailable`
that says what happened: no answer (down, wrong host or port, TLS handshake refused), rejected
(the reason the PACS gave, e.g. an unknown called or calling AE title), or aborted; and what
pynetdicom raises during the exchange (an association the PACS aborted, a dataset it cannot
encode, a file that cannot be read) into a :class:`PacsError`. The queries ask for UIDs,
classes and counts only, never for a patient's name or ID.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS

from cs3f.pacs import PacsError, PacsUnavailable
from cs3f.pacs.config import PacsSettings

__all__ = [
    "FIND",
    "PENDING",
    "RemoteSeries",
    "association",
    "find_context",
    "find_series",
    "find_studies",
    "is_present",
    "new_ae",
    "series_classes",
    "status_text",
    "study_series",
]

FIND = StudyRootQueryRetrieveInformationModelFind
PENDING = (0xFF00, 0xFF01)
"""The statuses of a C-FIND, C-GET or C-MOVE response that more responses follow."""


@dataclass(frozen=True)
class RemoteSeries:
    """A series of a study: its SeriesInstanceUID and instance count (None if not told)."""

    uid: str
    instances: int | None


def status_text(code: int | None, meanings: dict) -> str:
    """A DIMSE status as a person reads it: ``status 0xC000 (Unable to Process)``, with its
    meaning from one of pynetdicom's service-class tables; ``no answer`` for None."""
    if code is None:
        return "no answer"
    meaning = meanings.get(code, ("", ""))[1]
    return f"status 0x{code:04X}" + (f" ({meaning})" if meaning else "")


def new_ae(settings: PacsSettings) -> AE:
    """Our application entity, with ``settings.aet`` and its timeouts (seconds)."""
    ae = AE(ae_title=settings.aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.timeout_s
    ae.connection_timeout = settings.timeout_s
    return ae


def _why(assoc: Association, settings: PacsSettings) -> str:
    where = f"the PACS {settings.peer}" + (" (TLS)" if settings.tls else "")
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        return (
            f"{where} rejected the association ({answer.result_str}, {answer.source_str}: "
            f"{answer.reason_str}); check its AE title and that it knows ours ({settings.aet})"
        )
    if answer is None:
        return (
            f"cannot reach {where}: no answer (connection refused or timed out, or the TLS "
            "handshake failed); check that it runs, its host and port, and the TLS settings"
        )
    return f"{where} accepted none of the presentation contexts asked for (aborted)"


@contextmanager
def association(
    settings: PacsSettings,
    contexts: Sequence[PresentationContext],
    roles: Sequence = (),
    handlers: Sequence = (),
) -> Iterator[Association]:
    """An established association with the PACS, released on leaving the block.

    ``roles``: SCP/SCU role selection items (C-GET); ``handlers``: pynetdicom event handlers.

    Raises:
        PacsUnavailable: the PACS cannot be reached, rejects or aborts the association, or
            our TLS certificates cannot be read.
        PacsError: raised in the block, or what pynetdicom or pydicom raised there
            (RuntimeError: the association is gone; ValueError, AttributeError: a dataset it
            cannot send; OSError), with the same message.
    """
    try:
        tls = settings.client_tls()
    except (OSError, ssl.SSLError) as exc:
        raise PacsUnavailable(f"TLS: cannot read the certificate or key files: {exc}") from exc
    assoc = new_ae(settings).associate(
        settings.host,
        settings.port,
        contexts=list(contexts),
        ae_title=settings.called_aet,
        ext_neg=list(roles) or None,
        tls_args=tls,
        evt_handlers=list(handlers) or None,
    )
    if not assoc.is_established:
        raise PacsUnavailable(_why(assoc, settings))
    try:
        yield assoc
    except PacsError:
        raise
    except (RuntimeError, ValueError, AttributeError, OSError) as exc:
        raise PacsError(f"the exchange with {settings.peer} failed: {exc}") from exc
    finally:
        if assoc.is_established:
            assoc.release()


def find_context() -> PresentationContext:
    """The Study Root C-FIND presentation context."""
    return build_context(FIND)


def _find(assoc: Association, level: str, keys: dict) -> list[Dataset]:
    """The identifiers the PACS answers a C-FIND at ``level`` with ``keys`` (keyword: value).

    Raises:
        PacsError: the PACS failed the query or stopped answering.
    """
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    found = []
    for status, identifier in assoc.send_c_find(query, FIND):
        code = status.get("Status") if status else None
        if code is None:
            raise PacsError(f"the PACS stopped answering a {level}-level C-FIND")
        if code in PENDING and identifier is not None:
            found.append(identifier)
        elif code not in PENDING and code != 0x0000:
            said = status_text(code, QR_FIND_SERVICE_CLASS_STATUS)
            raise PacsError(f"the PACS failed a {level}-level C-FIND ({said})")
    return found


def find_studies(assoc: Association, settings: PacsSettings) -> list[str]:
    """The StudyInstanceUIDs of the studies matching the query of ``settings`` (modality, date
    range, description), sorted, each once."""
    keys = {
        "StudyInstanceUID": "",
        "StudyDate": settings.study_date,
        "ModalitiesInStudy": settings.modality,
        "StudyDescription": settings.study_description,
    }
    found = {str(ds.get("StudyInstanceUID", "") or "") for ds in _find(assoc, "STUDY", keys)}
    return sorted(found - {""})


def find_series(assoc: Association, study_uid: str, settings: PacsSettings) -> list[RemoteSeries]:
    """The series of the study of ``settings.modality`` (and body part, if given)."""
    keys = {
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": "",
        "Modality": settings.modality,
        "NumberOfSeriesRelatedInstances": "",
    }
    if settings.body_part:
        keys["BodyPartExamined"] = settings.body_part
    series = {}
    for ds in _find(assoc, "SERIES", keys):
        count = ds.get("NumberOfSeriesRelatedInstances")
        series[str(ds.get("SeriesInstanceUID", "") or "")] = int(count) if count else None
    return [RemoteSeries(uid, n) for uid, n in sorted(series.items()) if uid]


def study_series(assoc: Association, study_uid: str) -> set[str]:
    """The SeriesInstanceUIDs of every series of the study (a SERIES-level C-FIND)."""
    keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": ""}
    found = {str(ds.get("SeriesInstanceUID", "") or "") for ds in _find(assoc, "SERIES", keys)}
    return found - {""}


def is_present(assoc: Association, study_uid: str, series_uid: str) -> bool:
    """Whether the PACS holds the series (a SERIES-level C-FIND on its UID: the derived
    objects are each alone in a series whose UID is derived too)."""
    keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
    return any(
        str(ds.get("SeriesInstanceUID", "")) == series_uid for ds in _find(assoc, "SERIES", keys)
    )


def series_classes(assoc: Association, study_uid: str, series_uid: str) -> set[str]:
    """The SOP Class UIDs of the series' instances, as an IMAGE-level C-FIND answers them
    (empty when the PACS does not say).

    Raises:
        PacsError: the PACS refused or failed the query (many restrict this level).
    """
    keys = {
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": "",
        "SOPClassUID": "",
    }
    return {str(ds.get("SOPClassUID", "") or "") for ds in _find(assoc, "IMAGE", keys)} - {""}
