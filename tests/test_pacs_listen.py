"""``python -m app listen`` as a process, with a real PACS (Orthanc) pushing studies to it and
receiving the results. Without a bank it screens complete studies as a batch of at least two.

One listener runs for the module; what the tests do to it is chained through module fixtures
(as in test_pacs_orthanc.py), so any test runs alone or in any order: a calling AE title outside
the allow-list is rejected; a router that sends half of a study and aborts leaves it held, never
screened; Orthanc pushes two studies, which are screened together and whose SEG and SR arrive
in Orthanc; pushed again, they are found done in Orthanc and not screened again; SIGTERM stops
the listener with exit 0, the held study still in its inbox. Screening settings are the
seconds-long ``orthanc.FAST``.
"""

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from conftest import SHARED_DATA
from orthanc import AET, FAST, Orthanc, free_port, header, needs_orthanc, store, t1_series
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification

ROOT = Path(__file__).resolve().parents[1]
FOLDER = SHARED_DATA / "dicom" / "decubitus"
pytestmark = [
    needs_orthanc,
    pytest.mark.skipif(not FOLDER.is_dir(), reason="../shared/data absent"),
]
PUSHED, CUT = ("HFS", "HFP"), "HFDL"


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def listener(tmp_path_factory):
    """(orthanc, the listener process, its port, its output folder, its log file)."""
    root = tmp_path_factory.mktemp("listen")
    port = free_port()
    orthanc = Orthanc(root, {"cs3f": ("CS3F", port)}, None)
    peer = ["--pacs", f"127.0.0.1:{orthanc.dicom_port}", "--called-aet", AET]
    log = root / "listener.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "listen", "--port", str(port), "--aet", "CS3F", *peer,
             "--allow-aet", "ROUTER", "-o", str(root / "out"), *FAST, "--set", "pacs.quiet_s=2"],
            cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        store(orthanc.dicom_port, sorted(p for s in PUSHED for p in (FOLDER / s).rglob("*.dcm")))
        _wait_for(lambda: "listening as" in log.read_text(), 120, "the listener to start")
        yield orthanc, process, port, root / "out", log
    finally:
        if process.poll() is None:
            process.kill()
        orthanc.stop()


def _associate(port: int, calling: str, context: str):
    ae = AE(ae_title=calling)
    ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title="CS3F")


@pytest.fixture(scope="module")
def cut(listener) -> str:
    """A router sends 17 instances of a study and aborts: the study's UID, once held."""
    _, _, port, _, log = listener
    assoc = _associate(port, "ROUTER", MRImageStorage)
    assert assoc.is_established
    for path in t1_series(FOLDER / CUT)[:17]:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
    assoc.abort()  # the router goes away mid-study
    _wait_for(lambda: "held until it is sent again" in log.read_text(), 30, "the study held")
    return header(t1_series(FOLDER / CUT)[0]).StudyInstanceUID


def _push(orthanc: Orthanc, studies) -> None:
    ids = [orthanc.study_id(uid) for uid in studies]
    orthanc.request("POST", "/modalities/cs3f/store", {"Resources": ids, "Synchronous": True})


def _runs(out: Path) -> list[Path]:
    """The listener's run folders that have their pacs.json, oldest first."""
    return sorted(p.parent for p in (out / "runs").glob("*/pacs.json"))


@pytest.fixture(scope="module")
def first_push(listener) -> tuple[dict[str, str], Path]:
    """Orthanc pushes the two studies: (their UIDs by position, the run that screened them)."""
    orthanc, _, _, out, _ = listener
    studies = {s: header(t1_series(FOLDER / s)[0]).StudyInstanceUID for s in PUSHED}
    _push(orthanc, studies.values())

    def delivered() -> bool:  # in Orthanc, and the listener's record of it written
        sent = all(orthanc.instances(u, m) for u in studies.values() for m in ("SEG", "SR"))
        return sent and bool(_runs(out))

    _wait_for(delivered, 300, "the SEGs and SRs in Orthanc")
    (run,) = _runs(out)  # one screening: both studies, one batch
    return studies, run


@pytest.fixture(scope="module")
def second_push(listener, first_push) -> tuple[Path, int, int]:
    """Orthanc pushes the two studies again: (the run, Orthanc's instances before, after)."""
    orthanc, _, _, out, _ = listener
    before = orthanc.get("/statistics")["CountInstances"]
    _push(orthanc, first_push[0].values())
    _wait_for(lambda: len(_runs(out)) == 2, 120, "a second run")
    return _runs(out)[-1], before, orthanc.get("/statistics")["CountInstances"]


@pytest.fixture(scope="module")
def stopped(listener, cut, second_push) -> int:
    """SIGTERM, after everything else: the listener's exit code."""
    process = listener[1]
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_a_calling_ae_title_outside_the_allow_list_is_rejected(listener):
    _, _, port, _, log = listener
    assoc = _associate(port, "INTRUDER", Verification)
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.reason_str == "Calling AE title not recognised"
    said = "calling itself 'INTRUDER' and us 'CS3F': Calling AE title not recognised"
    _wait_for(lambda: said in log.read_text(), 30, "the log")


def test_a_study_cut_off_mid_association_is_held(listener, cut):
    out = listener[3]
    assert len(list((out / "inbox" / cut).glob("*.dcm"))) == 17


def test_pushed_studies_are_screened_together_and_their_results_sent(listener, first_push):
    orthanc, _, _, _, log = listener
    studies, run = first_push
    summary = json.loads((run / "pacs.json").read_text())
    assert {s["study_instance_uid"]: s["status"] for s in summary["studies"]} == {
        uid: "sent" for uid in studies.values()
    }
    for position, uid in studies.items():
        (instance,) = orthanc.instances(uid, "SEG")
        seg = hd.seg.segread(io.BytesIO(orthanc.file(instance["ID"])))
        t1 = header(t1_series(FOLDER / position)[0]).SeriesInstanceUID
        assert {series for _, series, _ in seg.get_source_image_uids()} == {t1}
        assert len(orthanc.instances(uid, "SR")) == 1
    assert json.loads((run / "scores.json").read_text())["run"]["batch_size"] == 2
    text = log.read_text()
    assert "crlab" not in text and "19700606" not in text  # PatientID, birth date


def test_studies_sent_again_are_not_screened_again(listener, first_push, second_push):
    log = listener[4]
    run, before, after = second_push
    summary = json.loads((run / "pacs.json").read_text())
    assert {s["study_instance_uid"]: s["status"] for s in summary["studies"]} == {
        uid: "in the PACS" for uid in first_push[0].values()
    }
    assert not (run / "scores.csv").exists()  # nothing screened
    assert after == before
    assert "their results are all in the PACS already" in log.read_text()


def test_sigterm_stops_the_listener_and_the_held_study_stays(listener, cut, stopped):
    out, log = listener[3], listener[4]
    assert stopped == 0
    assert "stopping; 1 studies stay in the inbox" in log.read_text()
    assert len(list((out / "inbox" / cut).glob("*.dcm"))) == 17
