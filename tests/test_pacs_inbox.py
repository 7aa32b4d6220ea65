"""The listener's rules without a PACS: when a received study counts as complete (quiet, no
sender still open, last sender released), that a study whose sender went away mid-study is held
until sent again, what an earlier process left behind, safe file names, the PACS settings'
checks, and our C-STORE SCP over TLS with client certificates."""

import ssl

import pytest
from orthanc import free_port, self_signed
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from app.settings import SettingsError, load_settings
from cs3f.pacs.config import PacsSettings, parse_address
from cs3f.pacs.inbox import Inbox
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


def test_taken_studies_move_out_and_leftovers_are_held_by_the_next_inbox(inbox, tmp_path):
    box, clock = inbox
    for study in ("1.2.3", "1.2.4"):
        box.add(1, study, f"{study}.1", b"x")
    box.ended(1, released=True)
    clock.now = 100
    batch = box.take(box.complete(10))
    assert sorted(p.name for p in batch.iterdir()) == ["1.2.3", "1.2.4"]
    assert (batch / "1.2.3" / "1.2.3.1.dcm").read_bytes() == b"x"
    assert len(box) == 0
    box.add(2, "1.2.5", "1.2.5.1", b"y")  # a process that stops here (or is killed mid-run)
    again = Inbox(tmp_path / "inbox", clock)  # ... leaves both the batch and the new study
    assert again.held() == ["1.2.3", "1.2.4", "1.2.5"] and again.complete(0) == []
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
        ("batch_studies", 1),
        ("move_port", 70000),
    ):
        with pytest.raises(SettingsError, match=f"pacs.{field}"):
            load_settings(None, [f"pacs.{field}={value}"])
    loaded = load_settings(None, ["pacs.study_date=20220101-"], pacs={"host": "h", "port": 11})
    assert (loaded.pacs.host, loaded.pacs.port, loaded.pacs.study_date) == ("h", 11, "20220101-")


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
