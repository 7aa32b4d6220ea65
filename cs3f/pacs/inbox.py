"""Instances received over C-STORE, grouped per study, and the rule that says a study is whole.

DICOM does not say when a study has been sent in full, so completeness is inferred: a study is
*complete* when no association that sent part of it is still open, the last one to end was
released normally (not aborted, not cut), and nothing of it has arrived for a quiet period. A
study whose sender aborted or vanished mid-study is *held*: never screened as it is, until an
association sends (some of) it again and is released. Studies an earlier process left in the
folder are held the same way, since whether they were whole is not known.

Layout: ``<folder>/<study key>/<instance key>.dcm``, each file written atomically, keys from
:func:`cs3f.io.outputs.study_keys` (never a path from a DICOM value). Studies taken for
screening move to ``<folder>/.batch-<n>/`` (one rename each), so a listener that is killed while
screening leaves them in the folder, where the next one holds them.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cs3f.io.outputs import atomic_path, pseudonym, study_keys

__all__ = ["Inbox", "folder_key"]

LOG = logging.getLogger("cs3f.app")  # the app's log, as cs3f.screening's
BATCH_PREFIX = ".batch-"
STORED, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700  # C-STORE statuses


def folder_key(uid: str) -> str:
    """The file-name stem of one UID: the UID itself when it is a safe, valid one."""
    return study_keys([uid], "unnamed")[0]


@dataclass
class _Study:
    key: str
    uid: str = ""  # its StudyInstanceUID ("" for one an earlier process left, until sent again)
    instances: int = 0
    last: float = 0.0  # clock time of the last instance or association end
    senders: set[int] = field(default_factory=set)  # open associations that sent part of it
    held: bool = False  # its last sender ended without a release, or an earlier run left it


class Inbox:
    """A folder of received studies and what is known of their completeness. Thread-safe:
    pynetdicom calls :meth:`handle_store` and :meth:`handle_close` from association threads.

    Args:
        folder: created if absent; study folders already in it are held.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, folder: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder, self.clock = Path(folder), clock
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._studies: dict[str, _Study] = {}
        self._batches = 0
        for batch in sorted(self.folder.glob(f"{BATCH_PREFIX}*")):  # a screening cut short
            for study in sorted(batch.iterdir()):
                study.rename(self.folder / study.name)
            batch.rmdir()
        for study in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            count = sum(1 for _ in study.glob("*.dcm"))
            self._studies[study.name] = _Study(study.name, "", count, clock(), held=True)

    # ----- receiving

    def add(self, sender: int, study_uid: str, instance_uid: str, data: bytes) -> None:
        """Keep one instance (``data``: the DICOM file's bytes) of ``study_uid`` sent over the
        association ``sender``; one sent again replaces the earlier copy.

        Raises:
            OSError: the file could not be written.
        """
        key = folder_key(study_uid)
        with self._lock:
            study = self._studies.get(key)
            if study is None:
                study = self._studies[key] = _Study(key)
                LOG.info("receiving study %s", pseudonym(key))
            study.uid = study_uid
            study.senders.add(sender)
            study.last = self.clock()
        path = self.folder / key / f"{folder_key(instance_uid)}.dcm"
        new = not path.exists()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        with self._lock:
            study.instances += new
            study.last = self.clock()

    def ended(self, sender: int, released: bool) -> None:
        """The association ``sender`` ended: released normally, or not (aborted, cut)."""
        with self._lock:
            for study in self._studies.values():
                if sender in study.senders:
                    study.senders.discard(sender)
                    study.held, study.last = not released, self.clock()
                    if not released:
                        LOG.warning(
                            "study %s: its sender went away mid-association after %d instances; "
                            "held until it is sent again",
                            pseudonym(study.key),
                            study.instances,
                        )

    def handle_store(self, event) -> int:
        """pynetdicom's EVT_C_STORE handler: keeps the instance as the peer encoded it."""
        try:
            dataset = event.dataset
            study_uid, instance_uid = str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID)
        except Exception:  # noqa: BLE001  (any undecodable or UID-less dataset is refused)
            return CANNOT_UNDERSTAND
        try:
            self.add(id(event.assoc), study_uid, instance_uid, event.encoded_dataset())
        except OSError as exc:
            LOG.error("could not keep a received instance: %s", exc)
            return OUT_OF_RESOURCES
        return STORED

    def handle_close(self, event) -> None:
        """pynetdicom's EVT_CONN_CLOSE handler."""
        self.ended(id(event.assoc), bool(event.assoc.is_released))

    # ----- reading

    def __len__(self) -> int:
        """Studies in the inbox, complete or not."""
        with self._lock:
            return len(self._studies)

    def count(self, study_uid: str) -> int:
        """Instances of the study kept so far (0 if none)."""
        with self._lock:
            study = self._studies.get(folder_key(study_uid))
            return study.instances if study else 0

    def complete(self, quiet_s: float) -> list[str]:
        """Keys of the studies that are complete: no open sender, not held, and ``quiet_s``
        seconds since their last instance."""
        now = self.clock()
        with self._lock:
            return sorted(
                s.key
                for s in self._studies.values()
                if not s.senders and not s.held and now - s.last >= quiet_s
            )

    def study_uid(self, key: str) -> str:
        """The StudyInstanceUID of the study ``key`` (a key :meth:`complete` gave)."""
        with self._lock:
            return self._studies[key].uid

    def held(self) -> list[str]:
        """Keys of the held studies (see the module docstring)."""
        with self._lock:
            return sorted(s.key for s in self._studies.values() if s.held)

    # ----- handing over

    def take(self, keys: list[str]) -> Path:
        """Move the studies ``keys`` out of the receiving state into a new batch folder inside
        the inbox (returned); instances of them that arrive later start them anew."""
        with self._lock:
            self._batches += 1
            batch = self.folder / f"{BATCH_PREFIX}{self._batches}"
            batch.mkdir()
            for key in keys:
                del self._studies[key]
                (self.folder / key).rename(batch / key)
        return batch

    def discard(self, study_uid: str) -> None:
        """Forget the study and delete what was kept of it (a retrieval that failed)."""
        key = folder_key(study_uid)
        with self._lock:
            self._studies.pop(key, None)
            shutil.rmtree(self.folder / key, ignore_errors=True)
