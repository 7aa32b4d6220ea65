"""One study from the PACS into an :class:`~cs3f.pacs.inbox.Inbox`: its series of the wanted
modality (and body part), by C-GET over our own association, or by C-MOVE to our C-STORE SCP
(:class:`~cs3f.pacs.server.StorageServer`, which the caller runs with :data:`IMAGE_STORAGE`).

A study is retrieved whole or not at all. A series arrives whole when its retrieval ends in
success with every sub-operation completed and at least as many instances as the PACS counted
(where the PACS's final response leaves the count out, the instances that arrived count).
Any other end fails the study, and what arrived of it is deleted, so that it is never screened
in part, with one exception: a series of which nothing arrived and whose instances the PACS
says (IMAGE-level C-FIND) are all of classes other than :data:`IMAGE_STORAGE` (a scanner's
private non-image objects, spectroscopy, reports) is left out: it has nothing to screen. Where
the PACS does not answer that query, the study fails. A study with no series of the modality,
or only such non-image ones, has nothing to retrieve (:class:`~cs3f.pacs.NothingToRetrieve`).

C-GET offers the image storage classes a screening reads (MR and CT, single- and multi-frame,
Legacy Converted, Secondary Capture), each in every transfer syntax the app is tested to decode,
as its own presentation context, so the PACS can send most instances as it stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

from cs3f.pacs import NothingToRetrieve, PacsError
from cs3f.pacs.config import PacsSettings
from cs3f.pacs.inbox import Inbox
from cs3f.pacs.network import (
    PENDING,
    RemoteSeries,
    association,
    find_context,
    find_series,
    series_classes,
    status_text,
)

__all__ = ["IMAGE_STORAGE", "TRANSFER_SYNTAXES", "Retrieved", "retrieve_study"]

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


@dataclass
class Retrieved:
    """What arrived of a study: ``instances``, and why each series ``left_out`` was."""

    instances: int = 0
    left_out: list[str] = field(default_factory=list)


def _count(final: Dataset | None, name: str) -> int | None:
    value = final.get(f"NumberOf{name}Suboperations") if final is not None else None
    return None if value is None or value == "" else int(value)


def _check(responses, series: RemoteSeries, kind: str, arrived: int) -> int:
    """The instances a C-GET or C-MOVE of ``series`` brought, from its ``responses``
    ((status, identifier) pairs, all of them) and, where its final response leaves the count of
    completed sub-operations out, ``arrived`` (the instances that arrived during it).

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
    done = _count(final, "Completed")
    done = arrived if done is None else done
    failed = (_count(final, "Failed") or 0) + (_count(final, "Warning") or 0)
    expected = series.instances if series.instances is not None else done
    if code != 0x0000 or failed or done < expected:
        meanings = QR_MOVE_SERVICE_CLASS_STATUS if kind == "C-MOVE" else QR_GET_SERVICE_CLASS_STATUS
        raise PacsError(
            f"{kind} of a series ended with {status_text(code, meanings)}: {done} instances "
            f"retrieved, {failed} failed, of {expected}"
        )
    return done


def _not_images(assoc: Association, study_uid: str, series: RemoteSeries) -> str:
    """Why the series has nothing to screen ("" when it may: the PACS says it holds images,
    or does not say)."""
    try:
        classes = series_classes(assoc, study_uid, series.uid)
    except PacsError:
        return ""
    if not classes or classes & set(IMAGE_STORAGE):
        return ""
    return f"a series of {len(classes)} non-image SOP class(es) ({', '.join(sorted(classes))})"


def _retrieve(
    assoc: Association, study_uid: str, settings: PacsSettings, inbox: Inbox, move: bool
) -> Retrieved:
    part = f", body part {settings.body_part}" if settings.body_part else ""
    series_list = find_series(assoc, study_uid, settings)
    if not series_list:
        raise NothingToRetrieve(f"the study has no series of modality {settings.modality}{part}")
    kind, got = ("C-MOVE" if move else "C-GET"), Retrieved()
    for series in series_list:
        request = Dataset()
        request.QueryRetrieveLevel = "SERIES"
        request.StudyInstanceUID = study_uid
        request.SeriesInstanceUID = series.uid
        before = inbox.count(study_uid)
        responses = list(  # every response: the instances have arrived by the last
            assoc.send_c_move(request, settings.aet, MOVE)
            if move
            else assoc.send_c_get(request, GET)
        )
        try:
            got.instances += _check(responses, series, kind, inbox.count(study_uid) - before)
        except PacsError:
            why = "" if inbox.count(study_uid) > before else _not_images(assoc, study_uid, series)
            if not why:
                raise
            got.left_out.append(why)
    if not got.instances:
        raise NothingToRetrieve(
            f"the study's series of modality {settings.modality}{part} hold no images: "
            + "; ".join(got.left_out)
        )
    if inbox.count(study_uid) < got.instances:
        raise PacsError(f"{got.instances} instances retrieved, {inbox.count(study_uid)} kept")
    return got


def retrieve_study(settings: PacsSettings, study_uid: str, inbox: Inbox, move: bool) -> Retrieved:
    """Retrieve the study's series of ``settings.modality`` into ``inbox``; returns what
    arrived. ``move``: by C-MOVE to ``settings.aet`` (our C-STORE SCP must be running, and
    known to the PACS), else by C-GET.

    Raises:
        PacsUnavailable: no association (nothing of the study is kept).
        NothingToRetrieve: the study has no series of images to retrieve (nothing is kept).
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
