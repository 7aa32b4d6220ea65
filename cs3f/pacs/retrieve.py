"""One study from the PACS into an :class:`~cs3f.pacs.inbox.Inbox`: its series of the wanted
modality (and body part), by C-GET over our own association, or by C-MOVE to our C-STORE SCP
(:class:`~cs3f.pacs.server.StorageServer`, which the caller runs).

A study is retrieved whole or not at all: any series whose retrieval ends in anything but
success with every sub-operation completed (or with fewer instances than the PACS counted)
fails the study, and what arrived of it is deleted, so that it is never screened in part.

C-GET offers the image storage classes a screening reads (MR and CT, single- and multi-frame,
Legacy Converted, Secondary Capture), each in every transfer syntax the app is tested to decode,
as its own presentation context, so the PACS can send most instances as it stores them.
"""

from __future__ import annotations

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.status import QR_GET_SERVICE_CLASS_STATUS, QR_MOVE_SERVICE_CLASS_STATUS
from pynetdicom.sop_class import (
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from cs3f.pacs import PacsError
from cs3f.pacs.config import PacsSettings
from cs3f.pacs.inbox import Inbox
from cs3f.pacs.network import (
    RemoteSeries,
    association,
    find_context,
    find_series,
    status_text,
)

__all__ = ["IMAGE_STORAGE", "retrieve_study"]

IMAGE_STORAGE = (
    MRImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    SecondaryCaptureImageStorage,
)
TRANSFER_SYNTAXES = tuple(
    getattr(uid, name)
    for name in (
        "ExplicitVRLittleEndian",
        "ImplicitVRLittleEndian",
        "DeflatedExplicitVRLittleEndian",
        "ExplicitVRBigEndian",
        "JPEGBaseline8Bit",
        "JPEGLosslessSV1",
        "JPEGLSLossless",
        "JPEGLSNearLossless",
        "JPEG2000Lossless",
        "JPEG2000",
        "RLELossless",
    )
)
"""The transfer syntaxes the app is tested to decode (README); a PACS transcodes others."""
GET, MOVE = StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove
PENDING = (0xFF00, 0xFF01)


def _check(responses, series: RemoteSeries, kind: str) -> int:
    """The completed sub-operations of a C-GET or C-MOVE, from its responses.

    Raises:
        PacsError: the PACS stopped answering, or the retrieval did not end in success with
            every sub-operation completed and at least as many as the PACS counted.
    """
    final = None
    for status, _ in responses:
        code = status.get("Status") if status else None
        if code is None:
            raise PacsError(f"the PACS stopped answering a {kind}")
        if code not in PENDING:
            final = status
    code = final.Status if final is not None else None
    done = int(final.get("NumberOfCompletedSuboperations", 0) or 0) if final else 0
    failed = int(final.get("NumberOfFailedSuboperations", 0) or 0) if final else 0
    failed += int(final.get("NumberOfWarningSuboperations", 0) or 0) if final else 0
    expected = series.instances if series.instances is not None else done
    if code != 0x0000 or failed or done < expected:
        meanings = QR_MOVE_SERVICE_CLASS_STATUS if kind == "C-MOVE" else QR_GET_SERVICE_CLASS_STATUS
        raise PacsError(
            f"{kind} of a series ended with {status_text(code, meanings)}: {done} instances "
            f"retrieved, {failed} failed, of {expected}"
        )
    return done


def _retrieve(
    assoc: Association, study_uid: str, settings: PacsSettings, inbox: Inbox, move: bool
) -> int:
    series_list = find_series(assoc, study_uid, settings)
    if not series_list:
        part = f", body part {settings.body_part}" if settings.body_part else ""
        raise PacsError(f"the study has no series of modality {settings.modality}{part}")
    total = 0
    for series in series_list:
        request = Dataset()
        request.QueryRetrieveLevel = "SERIES"
        request.StudyInstanceUID = study_uid
        request.SeriesInstanceUID = series.uid
        if move:
            total += _check(assoc.send_c_move(request, settings.aet, MOVE), series, "C-MOVE")
        else:
            total += _check(assoc.send_c_get(request, GET), series, "C-GET")
    if inbox.count(study_uid) < total:
        raise PacsError(f"{total} instances retrieved, {inbox.count(study_uid)} kept")
    return total


def retrieve_study(settings: PacsSettings, study_uid: str, inbox: Inbox, move: bool) -> int:
    """Retrieve the study's series of ``settings.modality`` into ``inbox``; returns how many
    instances arrived. ``move``: by C-MOVE to ``settings.aet`` (our C-STORE SCP must be
    running, and known to the PACS), else by C-GET.

    Raises:
        PacsUnavailable: no association (nothing of the study is kept).
        PacsError: the study could not be retrieved whole (nothing of it is kept).
    """
    contexts = [find_context()]
    if move:
        contexts.append(build_context(MOVE))
        roles, handlers = [], []
    else:
        contexts.append(build_context(GET))
        contexts += [build_context(c, [s]) for c in IMAGE_STORAGE for s in TRANSFER_SYNTAXES]
        roles = [build_role(c, scp_role=True) for c in IMAGE_STORAGE]
        handlers = [(evt.EVT_C_STORE, inbox.handle_store)]
    try:
        with association(settings, contexts, roles, handlers) as assoc:
            return _retrieve(assoc, study_uid, settings, inbox, move)
    except PacsError:
        inbox.discard(study_uid)
        raise
