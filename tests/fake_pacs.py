"""An in-process PACS for the tests, made of pynetdicom's own handlers: it answers C-FIND at
study, series and image level from the datasets it holds, serves C-GET and C-MOVE (to the
destinations it knows) series by series, and stores what it is sent, with failures to order:
a series whose retrieval loses its last instance, a storage class it does not take, a
storage class whose C-STORE it refuses. Seconds to start; no Orthanc needed.
"""

from __future__ import annotations

from pathlib import Path

from collections.abc import Callable

from orthanc import free_port
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_context,
    evt,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

AET = "FAKEPACS"
LEVEL_KEYS = {
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


def instance(study: str, series: str, sop_class: str, modality: str = "MR") -> Dataset:
    """A small dataset of ``sop_class`` in the series of the study (no pixels: the network
    does not look at them)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, modality
    ds.PatientID = "FAKE-ID"
    return ds


def save(ds: Dataset, path: Path) -> Path:
    """``ds`` as a DICOM file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


class FakePacs:
    """``with FakePacs(datasets) as pacs:`` a PACS on ``pacs.port`` (loopback) holding
    ``datasets``; what it is sent joins them (and ``received``).

    Args:
        destinations: C-MOVE destinations, AE title -> port on loopback.
        lossy: SeriesInstanceUIDs whose C-GET / C-MOVE loses the last instance.
        not_accepted: storage SOP classes it does not take at all (no presentation context).
        refused: storage SOP classes whose C-STORE it answers with 0xA700 (out of resources).
        on_move: called with the C-MOVE request's identifier before it is served.
    """

    def __init__(
        self,
        datasets: list[Dataset],
        destinations: dict[str, int] | None = None,
        lossy: frozenset[str] = frozenset(),
        not_accepted: frozenset[str] = frozenset(),
        refused: frozenset[str] = frozenset(),
        on_move: Callable[[Dataset], None] | None = None,
    ) -> None:
        self.datasets, self.received, self.on_move = list(datasets), [], on_move
        self.destinations, self.lossy, self.refused = destinations or {}, lossy, refused
        self.port = free_port()
        self.ae = AE(ae_title=AET)
        for sop_class in (
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelMove,
        ):
            self.ae.add_supported_context(sop_class)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax not in not_accepted:
                self.ae.add_supported_context(
                    context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
                )
        self._server = None

    def __enter__(self) -> FakePacs:
        handlers = [
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_C_GET, self._get),
            (evt.EVT_C_MOVE, self._move),
            (evt.EVT_C_STORE, self._store),
        ]
        self._server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=handlers
        )
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()

    def of(self, series_uid: str) -> list[Dataset]:
        return [ds for ds in self.datasets if ds.SeriesInstanceUID == series_uid]

    def _matches(self, query: Dataset) -> list[Dataset]:
        found = []
        for ds in self.datasets:
            keys = [k for k in LEVEL_KEYS[query.QueryRetrieveLevel] if query.get(k)]
            if query.get("Modality") and ds.Modality != query.Modality:
                continue
            if all(ds.get(k) == query.get(k) for k in keys):
                found.append(ds)
        return found

    def _find(self, event):
        query, seen = event.identifier, set()
        for ds in self._matches(query):
            answer = Dataset()
            answer.QueryRetrieveLevel = query.QueryRetrieveLevel
            for keyword in query.dir():
                if keyword in ds and keyword != "QueryRetrieveLevel":
                    setattr(answer, keyword, ds.get(keyword))
            key = tuple(answer.get(k) for k in LEVEL_KEYS[query.QueryRetrieveLevel])
            if key not in seen:
                seen.add(key)
                yield 0xFF00, answer

    def _sub_operations(self, series_uid: str):
        found = self.of(series_uid)
        yield len(found)
        if series_uid in self.lossy:  # its last file lost from the storage
            yield from ((0xFF00, ds) for ds in found[:-1])
            yield 0xA702, None
        else:
            yield from ((0xFF00, ds) for ds in found)

    def _get(self, event):
        yield from self._sub_operations(event.identifier.SeriesInstanceUID)

    def _move(self, event):
        if self.on_move:
            self.on_move(event.identifier)
        port = self.destinations.get(event.move_destination)
        if not port:
            yield None, None
            return
        classes = sorted({ds.SOPClassUID for ds in self.of(event.identifier.SeriesInstanceUID)})
        yield "127.0.0.1", port, {"contexts": [build_context(c) for c in classes]}
        yield from self._sub_operations(event.identifier.SeriesInstanceUID)

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        if ds.SOPClassUID in self.refused:
            return 0xA700
        self.received.append(ds)
        self.datasets.append(ds)
        return 0x0000


def push(
    port: int, datasets: list[Dataset], calling: str = AET, called: str = "CS3F"
) -> list[int | None] | None:
    """C-STORE ``datasets`` to the SCP on loopback ``port``; the statuses it answered (None
    for a dataset it has no presentation context for), or None when it refused the
    association."""
    ae = AE(ae_title=calling)
    for sop_class in sorted({ds.SOPClassUID for ds in datasets}):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    try:
        statuses = []
        for ds in datasets:
            try:
                statuses.append(assoc.send_c_store(ds).Status)
            except ValueError:  # no accepted context for its class
                statuses.append(None)
        return statuses
    finally:
        assoc.release()
