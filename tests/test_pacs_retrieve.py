"""Retrieving studies from a PACS (an in-process pynetdicom one, :mod:`fake_pacs`), seconds
long: how a C-GET or C-MOVE's responses are judged; C-MOVE into our own SCP, which takes only
the study being retrieved, so that only studies that arrived whole are handed on to be
screened; a series of non-image objects left out rather than failing its study; a study with
no series of the modality skipped, not failed."""

import pytest
from fake_pacs import AET, FakePacs, instance, push
from orthanc import free_port
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, MRSpectroscopyStorage

from app.pacs_commands import retrieve_all
from app.pacs_jobs import Job
from app.settings import AppSettings
from cs3f.pacs import PacsError
from cs3f.pacs.config import PacsSettings
from cs3f.pacs.inbox import NOT_AUTHORISED, Inbox
from cs3f.pacs.network import RemoteSeries
from cs3f.pacs.retrieve import (
    IMAGE_STORAGE,
    TRANSFER_SYNTAXES,
    _check,
    retrieve_study,
)
from cs3f.pacs.server import StorageServer


def _status(code: int, **counts: int) -> Dataset:
    status = Dataset()
    status.Status = code
    for name, value in counts.items():
        setattr(status, f"NumberOf{name}Suboperations", value)
    return status


def test_a_retrieval_is_judged_on_its_final_response_or_on_what_arrived():
    pending = (_status(0xFF00, Remaining=1, Completed=1), None)
    series = RemoteSeries("1.2.3", 2)
    assert _check([pending, (_status(0x0000, Completed=2), None)], series, "C-GET", 2) == 2
    # a final response without counts (allowed): the instances that arrived count
    assert _check([pending, (_status(0x0000), None)], series, "C-GET", 2) == 2
    assert _check([(_status(0x0000), None)], RemoteSeries("1.2.3", None), "C-MOVE", 5) == 5
    failures = [
        ([pending, (_status(0x0000), None)], 1, "1 instances retrieved, 0 failed, of 2"),
        ([(_status(0xB000, Completed=1, Failed=1), None)], 1, "status 0xB000"),
        ([(_status(0xA702, Completed=2), None)], 2, "status 0xA702"),
        ([(_status(0x0000, Completed=2, Warning=1), None)], 2, "1 failed"),
        ([pending, (Dataset(), None)], 1, "stopped answering"),
        ([], 0, "no answer"),
    ]
    for responses, arrived, said in failures:
        with pytest.raises(PacsError, match=said):
            _check(responses, series, "C-GET", arrived)


def _series(study: str, n: int, sop_class: str = MRImageStorage, modality: str = "MR"):
    series = generate_uid()
    return [instance(study, series, sop_class, modality) for _ in range(n)]


@pytest.fixture()
def held():
    """Studies in a PACS: whole (A), losing an instance (C), images and a spectroscopy series
    (D), CT only (E); and B, which nobody asked for."""
    studies = {name: generate_uid() for name in "ABCDE"}
    lossy = _series(studies["C"], 2)
    datasets = {
        "A": _series(studies["A"], 2),
        "B": _series(studies["B"], 1),
        "C": lossy,
        "D": _series(studies["D"], 2) + _series(studies["D"], 1, MRSpectroscopyStorage),
        "E": _series(studies["E"], 2, CTImageStorage, "CT"),
    }
    return studies, datasets, frozenset({lossy[0].SeriesInstanceUID})


def _settings(port: int, **extra) -> PacsSettings:
    return PacsSettings(host="127.0.0.1", port=port, called_aet=AET, timeout_s=30, **extra)


def test_c_move_hands_on_only_the_requested_studies_that_arrived_whole(held, tmp_path):
    studies, datasets, lossy = held
    move_port, pushed = free_port(), []

    def push_unasked(identifier: Dataset) -> None:  # a push nobody asked for, mid-retrieval
        if identifier.StudyInstanceUID == studies["A"]:
            pushed.extend(push(move_port, datasets["B"]))

    held_by_pacs = [ds for name in "ACDE" for ds in datasets[name]]
    with FakePacs(held_by_pacs, {"CS3F": move_port}, lossy, on_move=push_unasked) as pacs:
        settings = _settings(pacs.port, move_port=move_port)
        job = Job(AppSettings(pacs=settings), None, None, tmp_path / "out")
        inbox, ready = Inbox(tmp_path / "incoming"), tmp_path / "ready"
        inbox.expect(())
        fetch = [studies[name] for name in "ACDE"]
        with StorageServer(settings, move_port, inbox, IMAGE_STORAGE, TRANSFER_SYNTAXES):
            retrieve_all(job, fetch, set(), inbox, ready)
            late = push(move_port, datasets["C"])  # the PACS goes on after the C-MOVE failed
    assert pushed == [NOT_AUTHORISED] and late == [NOT_AUTHORISED] * 2
    assert sorted(p.name for p in ready.iterdir()) == sorted([studies["A"], studies["D"]])
    for name in "AD":
        assert len(list((ready / studies[name]).glob("*.dcm"))) == 2  # D: its images only
    assert not [p for p in (tmp_path / "incoming").rglob("*") if p.is_file()]
    outcomes = {name: job.outcome(studies[name]) for name in "ACDE"}
    assert outcomes["A"].instances == outcomes["D"].instances == 2
    assert outcomes["C"].status == "not retrieved"
    assert "C-MOVE of a series ended with status 0xA702" in outcomes["C"].reason
    assert outcomes["E"].status == "skipped"
    assert outcomes["E"].reason == "the study has no series of modality MR"
    assert [o.study_instance_uid for o in job.failed()] == [studies["C"]]  # skipped: no failure


def test_c_get_leaves_out_a_series_of_non_image_objects(held, tmp_path):
    studies, datasets, _ = held
    with FakePacs(datasets["D"]) as pacs:
        inbox = Inbox(tmp_path / "incoming")
        got = retrieve_study(_settings(pacs.port), studies["D"], inbox, move=False)
        spectroscopy = datasets["D"][-1].SeriesInstanceUID
        classes = pacs.of(spectroscopy)[0].SOPClassUID
    assert got.instances == 2 and inbox.count(studies["D"]) == 2
    assert got.left_out == [f"a series of 1 non-image SOP class(es) ({classes})"]


def test_a_study_of_non_image_objects_only_is_skipped_and_a_broken_one_fails(held, tmp_path):
    studies, datasets, lossy = held
    spectra = _series(studies["E"], 1, MRSpectroscopyStorage)
    with FakePacs(spectra + datasets["C"], lossy=lossy) as pacs:
        inbox = Inbox(tmp_path / "incoming")
        with pytest.raises(PacsError, match="hold no images") as nothing:
            retrieve_study(_settings(pacs.port), studies["E"], inbox, move=False)
        assert type(nothing.value).__name__ == "NothingToRetrieve"
        with pytest.raises(PacsError, match="C-GET of a series ended with status 0xA702"):
            retrieve_study(_settings(pacs.port), studies["C"], inbox, move=False)
    assert inbox.count(studies["C"]) == 0 and not list(inbox.folder.iterdir())
