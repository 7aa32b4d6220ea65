"""Our results and a PACS (an in-process pynetdicom one, :mod:`fake_pacs`), seconds long: nothing
is half-sent when the PACS takes no SRs or refuses one after its SEG; the results' UIDs follow
the series screened, the selection rules and the modality and body part screened, and a job
finds the results of a study by them;
a study the screening did not report on fails; results the PACS did not take are sent again
from the run folder; and what pynetdicom raises mid-exchange is a PacsError."""

from types import SimpleNamespace

import pytest
from fake_pacs import AET, FakePacs, instance, save
from pynetdicom.sop_class import (
    ComprehensiveSRStorage,
    MRImageStorage,
    SegmentationStorage,
)

import app.pacs_jobs
from app.pacs_jobs import Job
from app.settings import AppSettings, load_settings
from cs3f.encoders import load_encoder
from cs3f.io.result_uids import result_uids
from cs3f.pacs import PacsError
from cs3f.pacs.config import PacsSettings
from cs3f.pacs.network import association, find_context
from cs3f.pacs.send import send_results

STUDY, T1, DWI = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3.4"


def _settings(port: int) -> AppSettings:
    return AppSettings(pacs=PacsSettings(host="127.0.0.1", port=port, called_aet=AET))


def _results(folder, seed: str = "seed") -> list:
    """A SEG and an SR of STUDY's T1 series, their UIDs derived under ``seed``, as files."""
    uids = result_uids(seed, STUDY, T1)
    files = []
    for kind, sop_class, modality in (
        ("seg", SegmentationStorage, "SEG"),
        ("sr", ComprehensiveSRStorage, "SR"),
    ):
        ds = instance(STUDY, uids[kind].series, sop_class, modality)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uids[kind].instance
        files.append(save(ds, folder / kind / f"{STUDY}.dcm"))
    return files


def test_a_pacs_that_takes_no_srs_is_sent_nothing(tmp_path):
    with FakePacs([], not_accepted=frozenset({ComprehensiveSRStorage})) as pacs:
        with pytest.raises(PacsError, match="does not accept the storage of .*nothing was sent"):
            send_results(_settings(pacs.port).pacs, {STUDY: _results(tmp_path)})
    assert pacs.received == []


def test_an_sr_refused_after_its_seg_is_reported_then_sent_alone(tmp_path):
    files = _results(tmp_path)
    seg_uid = result_uids("seed", STUDY, T1)["seg"].instance
    with FakePacs([], refused=frozenset({ComprehensiveSRStorage})) as pacs:
        (first,) = send_results(_settings(pacs.port).pacs, {STUDY: files}).values()
        assert first.sent == [seg_uid] and "did not store the SR (status 0xA700" in first.error
        pacs.refused = frozenset()  # repaired: the next run sends only the SR
        (second,) = send_results(_settings(pacs.port).pacs, {STUDY: files}).values()
    assert second.present == [seg_uid] and len(second.sent) == 1 and not second.error
    assert [ds.Modality for ds in pacs.received] == ["SEG", "SR"]


def test_a_file_that_cannot_be_read_stops_the_sending_before_it_starts(tmp_path):
    (tmp_path / "broken.dcm").write_bytes(b"not DICOM")
    with FakePacs([]) as pacs:
        with pytest.raises(PacsError, match="cannot read a result to send"):
            send_results(_settings(pacs.port).pacs, {STUDY: [tmp_path / "broken.dcm"]})
        with pytest.raises(PacsError, match="the exchange with .* failed: gone"):
            with association(_settings(pacs.port).pacs, [find_context()]):
                raise RuntimeError("gone")  # as pynetdicom does on an aborted association
    assert pacs.received == []


def test_result_uids_follow_the_series_and_what_chooses_it(tmp_path):
    encoder = load_encoder("histogram", None, device="cpu", batch_size=8)
    rules = tmp_path / "rules.json"
    rules.write_text('{"selections": [{"name": "any MR", "conditions": {"Modality": "MR"}}]}')
    seeds = {
        load_settings(None, overrides).results_seed(encoder, None)
        for overrides in (
            [],
            ["pacs.body_part=HEAD"],
            ["pacs.modality=CT"],
            [f"selection_rules={rules}"],
        )
    }
    assert len(seeds) == 4
    assert result_uids("seed", STUDY, T1) != result_uids("seed", STUDY, DWI)
    head = load_settings(None, ["pacs.body_part=HEAD*"]).pacs
    assert head.wants("MR", "HEADNECK") and not head.wants("MR", "CHEST")
    assert not head.wants("CT", "HEAD") and AppSettings().pacs.wants("MR", "")


def test_a_job_finds_the_results_of_a_study_by_their_derived_series(tmp_path):
    images = [instance(STUDY, series, MRImageStorage) for series in (T1, DWI)]
    with FakePacs(images) as pacs:
        job = Job(_settings(pacs.port), None, None, tmp_path)
        job.seed = "seed"
        assert job.in_pacs([STUDY, "1.2.3.4.5"]) == set()
        send_results(job.settings.pacs, {STUDY: _results(tmp_path, "seed")})
        assert job.in_pacs([STUDY, "1.2.3.4.5"]) == {STUDY}
        job.seed = "other rules"  # another seed: those results are not this job's
        assert job.in_pacs([STUDY]) == set()


def test_a_study_the_screening_did_not_report_on_fails(tmp_path, monkeypatch):
    ledger = SimpleNamespace(error="", rows=[])  # the screening found none of them
    written = SimpleNamespace(report=SimpleNamespace(result=SimpleNamespace(ledger=ledger)))
    monkeypatch.setattr(app.pacs_jobs, "run_app", lambda *args, **kwargs: written)
    monkeypatch.setattr(app.pacs_jobs, "run_info", lambda *args: {})
    job = Job(AppSettings(), None, None, tmp_path)
    job.screen_and_send(tmp_path, send={STUDY})
    assert (job.outcome(STUDY).status, job.outcome(STUDY).reason) == (
        "failed",
        "not found by the screening",
    )
    assert job.failed()


def test_results_the_pacs_did_not_take_are_sent_again_from_the_run_folder(tmp_path):
    _results(tmp_path)
    job = Job(_settings(1), None, None, tmp_path)  # nothing listens on port 1
    job.outcome(STUDY).files = [f"seg/{STUDY}.dcm", f"sr/{STUDY}.dcm"]
    job._send({STUDY: [tmp_path / f for f in job.outcome(STUDY).files]})
    job.write_summary(pacs="down")
    assert job.outcome(STUDY).status == "not sent"
    with FakePacs([]) as pacs:
        again, facts = Job.reopen(_settings(pacs.port), tmp_path)
        assert facts == {"pacs": "down"} and again.resend() == 0
    assert again.outcome(STUDY).status == "sent" and len(again.outcome(STUDY).sent) == 2
    assert [ds.Modality for ds in pacs.received] == ["SEG", "SR"]
