"""A real PACS for the tests: Orthanc (Debian package ``orthanc``) on loopback ports, with a
generated configuration and its storage in a temporary folder, loaded over C-STORE.

``Orthanc(folder, modalities, tls)`` writes the configuration (AE title ORTHANC, the called AE
title checked, our AE titles in DicomModalities, C-FIND answered from its index, TLS settings
if given), starts the server and waits for its REST API; ``stop()`` ends it. The REST helpers
read what Orthanc holds, as an independent witness of what the app sent.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, StoragePresentationContexts

BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
AET = "ORTHANC"
needs_orthanc = pytest.mark.skipif(
    not Path(BINARY).exists(), reason="Orthanc (Debian package orthanc) absent"
)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """A running Orthanc: ``dicom_port``, ``http_port``, ``storage`` and REST helpers."""

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, int]], tls: dict | None):
        self.folder, self.dicom_port, self.http_port = folder, free_port(), free_port()
        self.storage = folder / "storage"
        config = {
            "Name": "cs3f-test",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(folder / "index"),
            "StorageAccessOnFind": "Never",
            "MaximumStorageCacheSize": 0,  # read every file from disk (tests remove one)
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": AET,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomModalities": {
                name: {"AET": aet, "Host": "127.0.0.1", "Port": port, "UseDicomTls": bool(tls)}
                for name, (aet, port) in modalities.items()
            },
            "DicomAlwaysAllowStore": True,
            "DicomAssociationCloseDelay": 0,
            "OverwriteInstances": True,
            "Plugins": [],
            "SaveJobs": False,
            **(tls or {}),
        }
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log = open(folder / "orthanc.log", "w")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            [BINARY, str(folder / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/system")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "Orthanc did not start:\n" + (folder / "orthanc.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    # ----- REST

    def request(self, method: str, path: str, body: object = None) -> object:
        """``body``: text as it is (a UID for /tools/lookup), anything else as JSON."""
        if body is not None:
            body = body if isinstance(body, str) else json.dumps(body)
        data = None if body is None else body.encode()
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(urllib.request.Request(url, data, method=method)) as answer:
            payload = answer.read()
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload

    def get(self, path: str) -> object:
        return self.request("GET", path)

    def study_id(self, study_uid: str) -> str:
        (found,) = self.request("POST", "/tools/lookup", study_uid)
        return found["ID"]

    def instances(self, study_uid: str, modality: str | None = None) -> list[dict]:
        """The study's instances (Orthanc's JSON), of series of ``modality`` if given."""
        found = []
        for series in self.get(f"/studies/{self.study_id(study_uid)}/series"):
            if modality in (None, series["MainDicomTags"].get("Modality")):
                found += self.get(f"/series/{series['ID']}/instances")
        return found

    def file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file")

    def storage_path(self, instance_id: str) -> Path:
        """Where Orthanc keeps the instance's file."""
        uuid = self.get(f"/instances/{instance_id}/attachments/dicom/info")["Uuid"]
        return self.storage / uuid[:2] / uuid[2:4] / uuid


def store(port: int, paths: list[Path], calling: str = "LOADER", called: str = AET) -> None:
    """C-STORE the files to the SCP on loopback ``port``, as a modality does."""
    ae = AE(ae_title=calling)
    ae.requested_contexts = StoragePresentationContexts
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        for path in paths:
            status = assoc.send_c_store(pydicom.dcmread(path))
            assert status.Status == 0x0000
    finally:
        assoc.release()


DECUBITUS = ("HFS", "HFP", "HFDL", "HFDR")
FAST = [
    "--encoder", "histogram",
    "--set", "preprocess.input=atlas",  # the crop and intensity steps only: seconds a study
    "--set", "preprocess.brain_ml=[1,100000]",  # a head with its skull, not a brain
    "--set", "preprocess.size=48",
    "--set", "tokens.q_coarse=8",
    "--set", "tokens.dim=16",
    "--set", "tokens.axes=[2]",
    "--set", "scoring.variant=C",
    "--set", "report_studies=0",
]  # fmt: skip
"""Settings that screen a decubitus study in seconds: the networking is under test here."""


def t1_series(folder: Path) -> list[Path]:
    """The T1 instances of one decubitus study folder."""
    return sorted(next(p for p in folder.iterdir() if "t1" in p.name).glob("*.dcm"))


def header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 and its key (PEM files), made with
    openssl; skips the test where openssl is absent."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl absent")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
