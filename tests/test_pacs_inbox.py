"""The listener's rules without a PACS: when a received study counts as complete (quiet, no
sender still open, last sender released), that a study whose sender went away mid-study is held
until sent again (by a new association, not by another one that was sending it too), that a
study is taken for screening only while it is still complete, what an earlier process left
behind (a batch cut short even while the same study was sent again), safe file names, the PACS
settings' checks, and our C-STORE SCP: over TLS with client certificates, refusing the studies
it does not expect, keeping the series of the modality only, on loopback by default, and
logging why it refused an association."""

import ssl

import pytest
from fake_pacs import AET, instance, push
from orthanc import free_port, self_signed
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from app.settings import SettingsError, load_settings
from cs3f.pacs.config import PacsSettings, parse_address
from cs3f.pacs.inbox import NOT_AUTHORISED, Inbox
from cs3f.pacs.server import StorageServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def inbox(tmp_path):
    clock = Clock()
    return Inbox(tmp_path / "inbox", clock), clock


def test_a_study_is_complete_once_its_sender_released_and_it_stayed_quiet(inbox):
    box, clock = inbox
    box.add(1, "1.2.3", "1.2.3.1", b"one")
    box.add(1, "1.2.3", "1.2.3.2", b"two")
    clock.now = 60
    assert box.complete(10) == []  # the association is still open
    box.ended(1, released=True)
    assert box.complete(10) == []  # quiet counts from the association's end
    clock.now = 71
    assert box.complete(10) == ["1.2.3"] and box.count("1.2.3") == 2
    box.add(2, "1.2.3", "1.2.3.2", b"two again")  # the same instance again replaces it
    assert box.count("1.2.3") == 2 and box.complete(10) == []


def test_a_sender_that_goes_away_mid_study_leaves_it_held_until_sent_again(inbox):
    box, clock = inbox
    box.add(1, "1.2.3", "1.2.3.1", b"one")
    box.add(3, "1.2.4", "1.2.4.1", b"other")
    box.ended(1, released=False)  # aborted, or the connection dropped
    box.ended(3, released=True)
    clock.now = 1000
    assert box.complete(10) == ["1.2.4"] and box.held() == ["1.2.3"]
    box.add(2, "1.2.3", "1.2.3.1", b"one")  # the sender tries again
    box.add(2, "1.2.3", "1.2.3.2", b"two")
    box.ended(2, released=True)
    clock.now = 1011
    assert box.complete(10) == ["1.2.3", "1.2.4"] and box.held() == []


def test_an_abort_is_cleared_only_by_a_sender_that_started_after_it(inbox):
    box, clock = inbox
    box.add(1, "1.2.3", "1.2.3.1", b"one")  # A and B send the study at the same time
    box.add(2, "1.2.3", "1.2.3.2", b"two")
    box.ended(1, released=False)  # A aborts
    box.ended(2, released=True)  # B's release says nothing of what A did not send
    clock.now = 100
    assert box.held() == ["1.2.3"] and box.complete(10) == []
    box.add(3, "1.2.3", "1.2.3.3", b"three")  # C sends it again, after the abort
    box.ended(3, released=True)
    box.ended(3, released=False)  # the connection's close after the release changes nothing
    clock.now = 200
    assert box.held() == [] and box.complete(10) == ["1.2.3"]


def test_a_study_is_taken_only_while_it_is_still_complete(inbox):
    box, clock = inbox
    box.add(1, "1.2.3", "1.2.3.1", b"one")
    box.add(1, "1.2.4", "1.2.4.1", b"x")
    box.ended(1, released=True)
    clock.now = 100
    ready = box.complete(10)
    box.add(2, "1.2.3", "1.2.3.2", b"two")  # a new association sends more of it meanwhile
    assert box.take(ready, 10, minimum=2) is None  # one left: too few for a batch, none taken
    batch = box.take(ready, 10)
    assert [s.uid for s in batch.studies] == ["1.2.4"]  # not a fragment of 1.2.3
    box.ended(2, released=True)
    clock.now = 200
    (study,) = box.take(box.complete(10), 10).studies
    assert (study.uid, study.instances) == ("1.2.3", 2)
    assert len(list((batch.folder.parent / ".batch-2" / "1.2.3").glob("*.dcm"))) == 2


def test_taken_studies_move_out_and_leftovers_are_held_by_the_next_inbox(inbox, tmp_path):
    box, clock = inbox
    for study in ("1.2.3", "1.2.4"):
        box.add(1, study, f"{study}.1", b"x")
    box.ended(1, released=True)
    clock.now = 100
    taken = box.take(box.complete(10), 10)
    batch = taken.folder
    assert [(s.key, s.uid, s.instances) for s in taken.studies] == [
        ("1.2.3", "1.2.3", 1),
        ("1.2.4", "1.2.4", 1),
    ]
    assert sorted(p.name for p in batch.iterdir()) == ["1.2.3", "1.2.4"]
    assert (batch / "1.2.3" / "1.2.3.1.dcm").read_bytes() == b"x"
    assert len(box) == 0
    box.add(2, "1.2.5", "1.2.5.1", b"y")  # a process that stops here (or is killed mid-run)
    again = Inbox(tmp_path / "inbox", clock)  # ... leaves both the batch and the new study
    assert again.held() == ["1.2.3", "1.2.4", "1.2.5"] and again.complete(0) == []
    assert not list((tmp_path / "inbox").glob(".batch-*"))


def test_a_study_sent_again_while_it_was_screened_merges_at_the_next_start(inbox, tmp_path):
    box, clock = inbox
    box.add(1, "1.2.3", "1.2.3.1", b"old")
    box.add(1, "1.2.3", "1.2.3.2", b"two")
    box.ended(1, released=True)
    clock.now = 100
    box.take(box.complete(10), 10)  # screening it, when it is sent again ...
    box.add(2, "1.2.3", "1.2.3.1", b"new")
    box.add(2, "1.2.3", "1.2.3.3", b"three")  # ... and the process is killed mid-write:
    (tmp_path / "inbox" / "1.2.3" / ".1.2.3.4.dcm.x1y2.part").write_bytes(b"half")
    again = Inbox(tmp_path / "inbox", clock)  # starts, rather than failing on ENOTEMPTY
    assert again.held() == ["1.2.3"] and again.count("1.2.3") == 3
    files = {p.name: p.read_bytes() for p in (tmp_path / "inbox" / "1.2.3").iterdir()}
    assert files == {"1.2.3.1.dcm": b"new", "1.2.3.2.dcm": b"two", "1.2.3.3.dcm": b"three"}
    assert not list((tmp_path / "inbox").glob(".batch-*"))


def test_file_names_never_come_from_raw_dicom_values(inbox, tmp_path):
    box, _ = inbox
    box.add(1, "../../evil", "a/b", b"x")
    (study,) = [p for p in (tmp_path / "inbox").iterdir()]
    assert study.parent == tmp_path / "inbox" and not study.name.startswith(".")
    (instance,) = study.iterdir()
    assert "/" not in instance.name and instance.read_bytes() == b"x"
    box.discard("../../evil")
    assert list((tmp_path / "inbox").iterdir()) == []


def test_pacs_settings_are_checked_and_named():
    assert parse_address("pacs.example.org:4242") == ("pacs.example.org", 4242)
    assert parse_address("[::1]:104") == ("::1", 104)
    for bad in ("pacs", "pacs:0", "pacs:http"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)
    settings = PacsSettings(called_aet="ORTHANC", allowed_aets=("ROUTER",))
    assert settings.accepted_aets == ["ORTHANC", "ROUTER"]
    for field, value in (
        ("aet", "A-TITLE-LONGER-THAN-16"),
        ("called_aet", "BACK\\SLASH"),
        ("study_date", "2022-04-07"),
        ("study_date", "20220230-"),
        ("batch_studies", 1),
        ("scp_timeout_s", 0),
        ("move_port", 70000),
    ):
        with pytest.raises(SettingsError, match=f"pacs.{field}"):
            load_settings(None, [f"pacs.{field}={value}"])
    loaded = load_settings(None, ["pacs.study_date=20220101-"], pacs={"host": "h", "port": 11})
    assert (loaded.pacs.host, loaded.pacs.port, loaded.pacs.study_date) == ("h", 11, "20220101-")
    assert loaded.pacs.bind == "127.0.0.1"  # our SCP: this machine only, unless told


def test_the_scp_refuses_studies_it_does_not_expect_and_says_why_it_refuses(tmp_path, caplog):
    settings, port = PacsSettings(called_aet=AET), free_port()
    box = Inbox(tmp_path / "inbox", wanted=settings.wants)  # series of MR, as pacs retrieves
    wanted = instance("1.2.3", "1.2.3.4", MRImageStorage)
    other = instance("1.2.9", "1.2.9.4", MRImageStorage)
    ct = instance("1.2.3", "1.2.3.5", CTImageStorage, "CT")
    with StorageServer(settings, port, box):
        assert push(port, [wanted, other, ct]) == [0x0000] * 3  # a listener takes any study
        assert len(list((tmp_path / "inbox" / "1.2.3").iterdir())) == 1  # but not the CT
        box.expect({"1.2.3"})
        assert push(port, [wanted, other]) == [0x0000, NOT_AUTHORISED]
        box.expect(())
        assert push(port, [wanted]) == [NOT_AUTHORISED]
        assert push(port, [wanted], called="NOT-CS3F") is None
    assert box.count("1.2.3") == 1 and box.count("1.2.9") == 1
    assert "calling itself 'FAKEPACS' and us 'NOT-CS3F': Called AE title not recognised" in (
        caplog.text
    )


def test_the_scp_speaks_tls_and_asks_for_a_client_certificate(tmp_path):
    cert, key = self_signed(tmp_path)
    pem = {"tls_cert": str(cert), "tls_key": str(key), "tls_ca": str(cert)}
    settings, port = PacsSettings(called_aet="ORTHANC", tls=True, **pem), free_port()

    def echo(certificate: bool, tls: bool = True) -> bool:
        ae = AE(ae_title="ORTHANC")
        ae.add_requested_context(Verification)
        context = ssl.create_default_context(cafile=str(cert))
        if certificate:
            context.load_cert_chain(cert, key)
        tls_args = (context, "127.0.0.1") if tls else None
        assoc = ae.associate("127.0.0.1", port, ae_title="CS3F", tls_args=tls_args)
        answered = assoc.is_established and assoc.send_c_echo().Status == 0x0000
        if assoc.is_established:
            assoc.release()
        return answered

    with StorageServer(settings, port, Inbox(tmp_path / "inbox")):
        assert echo(certificate=True)
        assert not echo(certificate=False)  # tls_ca given: a client certificate is required
        assert not echo(certificate=True, tls=False)
