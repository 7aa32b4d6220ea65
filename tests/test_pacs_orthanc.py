"""``python -m app pacs`` against a real PACS: Orthanc, loaded over C-STORE with the four
decubitus studies (a T1 series and a DWI series each), one of which has lost an instance from
Orthanc's storage (its index still lists it), so that it cannot be retrieved whole.

The job runs three times on the same Orthanc, as an operator would run it: by C-MOVE, with the
broken study failing alone while the three others are screened and their results sent; by
C-GET once the lost instance is stored again, when only the repaired study's results are sent;
and once more, when everything is found done before any retrieval. Then the failures that stop a
job before it starts: the PACS down, the association rejected, and TLS. Screening settings are
the seconds-long ones of ``orthanc.FAST``: the networking is under test here.
"""

import io
import json

import highdicom as hd
import pytest
from conftest import SHARED_DATA
from orthanc import (
    AET,
    DECUBITUS,
    FAST,
    Orthanc,
    free_port,
    header,
    needs_orthanc,
    self_signed,
    store,
    t1_series,
)

from app.__main__ import main
from cs3f.io.dicom_pmap import QUANTITY
from cs3f.io.dicom_sr import FLAGGED, PERCENTILE

FOLDER = SHARED_DATA / "dicom" / "decubitus"
pytestmark = [
    needs_orthanc,
    pytest.mark.skipif(not FOLDER.is_dir(), reason="../shared/data absent"),
]
IDENTIFYING = ("crlab", "19700606", "HFS")  # the studies' PatientID, birth date and name


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc with the four studies; one T1 instance of HFDL lost from its storage. Yields
    (orthanc, our C-MOVE port, StudyInstanceUID per position, the lost file)."""
    move_port = free_port()
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc"), {"cs3f": ("CS3F", move_port)}, None)
    try:
        store(orthanc.dicom_port, sorted(FOLDER.rglob("*.dcm")))
        lost = t1_series(FOLDER / "HFDL")[17]
        (found,) = orthanc.request("POST", "/tools/lookup", header(lost).SOPInstanceUID)
        orthanc.storage_path(found["ID"]).unlink()
        studies = {p: header(t1_series(FOLDER / p)[0]).StudyInstanceUID for p in DECUBITUS}
        yield orthanc, move_port, studies, lost
    finally:
        orthanc.stop()


def _job(orthanc: Orthanc, out, *extra) -> list[str]:
    peer = ["--pacs", f"127.0.0.1:{orthanc.dicom_port}", "--called-aet", AET, "--aet", "CS3F"]
    return ["pacs", *peer, "-o", str(out), *FAST, *extra]


def _summary(out) -> dict[str, dict]:
    studies = json.loads((out / "pacs.json").read_text())["studies"]
    return {s["study_instance_uid"]: s for s in studies}


def _results(orthanc: Orthanc, study_uid: str) -> dict[str, list[bytes]]:
    """Our objects in the study, as Orthanc holds them: the files of its SEG and SR series."""
    return {
        modality: [orthanc.file(i["ID"]) for i in orthanc.instances(study_uid, modality)]
        for modality in ("SEG", "SR")
    }


@pytest.fixture(scope="module")
def first_run(pacs, tmp_path_factory):
    orthanc, move_port, _, _ = pacs
    out = tmp_path_factory.mktemp("first") / "out"
    return main(_job(orthanc, out, "--move-port", str(move_port))), out


@pytest.fixture(scope="module")
def second_run(pacs, first_run, tmp_path_factory):
    orthanc, _, _, lost = pacs
    store(orthanc.dicom_port, [lost])  # the PACS repaired: Orthanc overwrites the instance
    out = tmp_path_factory.mktemp("second") / "out"
    return main(_job(orthanc, out)), out


def test_a_study_that_cannot_be_retrieved_fails_alone(pacs, first_run):
    orthanc, _, studies, _ = pacs
    code, out = first_run
    assert code == 4  # some studies failed, the others were done
    summary = _summary(out)
    broken = summary[studies["HFDL"]]
    assert broken["status"] == "not retrieved"
    assert "C-MOVE of a series ended with status" in broken["reason"], broken["reason"]
    assert not any(_results(orthanc, studies["HFDL"]).values())  # nothing of it sent
    assert not (out / "seg" / f"{studies['HFDL']}.dcm").exists()  # nor screened in part
    for position in ("HFS", "HFP", "HFDR"):
        assert summary[studies[position]]["status"] == "sent"
        assert len(summary[studies[position]]["sent"]) == 2
    rows = json.loads((out / "scores.json").read_text())["studies"]
    assert sorted(r["study_instance_uid"] for r in rows if r["status"] == "scored") == sorted(
        studies[p] for p in ("HFS", "HFP", "HFDR")
    )
    log = (out / "run.log").read_text()
    assert f"study {broken['pseudonym']}: not retrieved" in log
    assert not [word for word in IDENTIFYING if word in log]


def test_a_rerun_completes_the_job_without_duplicates(pacs, first_run, second_run):
    orthanc, _, studies, _ = pacs
    code, out = second_run
    assert code == 0
    summary = _summary(out)
    assert summary[studies["HFDL"]]["status"] == "sent"
    for position in ("HFS", "HFP", "HFDR"):  # retrieved again, for the batch only
        assert summary[studies[position]]["status"] == "reference"
        assert summary[studies[position]]["sent"] == []
    for position, study in studies.items():
        objects = _results(orthanc, study)
        assert len(objects["SEG"]) == 1 and len(objects["SR"]) == 1, position
        # the UIDs derive from the study, version and settings: this run's own SEG and SR
        # are those the first run sent, so the PACS holds no second copy
        for kind, files in (("seg", objects["SEG"]), ("sr", objects["SR"])):
            ours = hd.seg.segread if kind == "seg" else hd.sr.srread
            local = ours(out / kind / f"{study}.dcm")
            assert local.SOPInstanceUID == ours(io.BytesIO(files[0])).SOPInstanceUID


def test_the_pacs_holds_a_seg_and_sr_per_study(pacs, first_run, second_run):
    orthanc, _, studies, _ = pacs
    rows = {}
    for _, out in (second_run, first_run):  # each study's row from the run that sent it
        for row in json.loads((out / "scores.json").read_text())["studies"]:
            rows[row["study_instance_uid"]] = row
    for position, study in studies.items():
        t1 = header(t1_series(FOLDER / position)[0]).SeriesInstanceUID
        objects = _results(orthanc, study)
        seg = hd.seg.segread(io.BytesIO(objects["SEG"][0]))
        assert seg.StudyInstanceUID == study and seg.number_of_segments == 1
        assert {series for _, series, _ in seg.get_source_image_uids()} == {t1}  # not the DWI
        assert seg.get_segment_description(1).segment_label == "Anomaly"
        report = hd.sr.srread(io.BytesIO(objects["SR"][0]))
        assert report.StudyInstanceUID == study
        (group,) = report.content.get_image_measurement_groups()
        row = rows[study]
        (score,) = group.get_measurements(name=QUANTITY)
        assert score.value == pytest.approx(row["score"], rel=1e-5)
        (percentile,) = group.get_measurements(name=PERCENTILE)
        assert percentile.value == pytest.approx(row["batch_percentile"])
        (flag,) = group.get_qualitative_evaluations(name=FLAGGED)
        assert flag.value.meaning == ("Yes" if row["flagged"] else "No")
        (region,) = report.content.get_volumetric_roi_measurement_groups()
        assert region.referenced_segment[0].referenced_sop_instance_uid == seg.SOPInstanceUID


def test_a_third_run_finds_everything_done(pacs, second_run, tmp_path):
    orthanc = pacs[0]
    before = orthanc.get("/statistics")["CountInstances"]
    assert main(_job(orthanc, tmp_path / "out")) == 0
    summary = _summary(tmp_path / "out")
    assert {s["status"] for s in summary.values()} == {"in the PACS"} and len(summary) == 4
    assert not (tmp_path / "out" / "seg").exists()  # nothing retrieved, nothing screened
    assert orthanc.get("/statistics")["CountInstances"] == before


def test_the_pacs_down(tmp_path, capsys):
    silent = ["--pacs", f"127.0.0.1:{free_port()}", "--called-aet", AET]  # nothing listens there
    code = main(["pacs", *silent, "-o", str(tmp_path / "out"), *FAST])
    assert code == 3
    assert "cannot reach the PACS" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "pacs.json").read_text())
    assert summary["error"].startswith("cannot reach") and summary["studies"] == []


def test_an_association_the_pacs_rejects(pacs, tmp_path, capsys):
    code = main(_job(pacs[0], tmp_path / "out", "--called-aet", "NOT-ORTHANC"))
    assert code == 3
    err = capsys.readouterr().err
    assert "rejected the association" in err and "Called AE title not recognised" in err


def test_tls(tmp_path, capsys):
    """Orthanc with DICOM TLS (client certificates required): the job queries it with ours,
    and without TLS it cannot reach it."""
    cert, key = self_signed(tmp_path)
    tls = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(cert),
        "DicomTlsPrivateKey": str(key),
        "DicomTlsTrustedCertificates": str(cert),
        "DicomTlsRemoteCertificateRequired": True,
    }
    (tmp_path / "orthanc").mkdir()
    orthanc = Orthanc(tmp_path / "orthanc", {"cs3f": ("CS3F", free_port())}, tls)
    try:
        secure = ["--tls", "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(cert)]
        assert main(_job(orthanc, tmp_path / "secure", *secure)) == 0  # an empty PACS: done
        summary = json.loads((tmp_path / "secure" / "pacs.json").read_text())
        assert summary["tls"] is True and summary["studies"] == [] and not summary["error"]
        capsys.readouterr()
        assert main(_job(orthanc, tmp_path / "plain")) == 3
        assert "cannot reach the PACS" in capsys.readouterr().err
    finally:
        orthanc.stop()
