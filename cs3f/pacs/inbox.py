"""Instances received over C-STORE, grouped per study, and the rule that says a study is whole.

DICOM does not say when a study has been sent in full, so completeness is inferred: a study is
*complete* when no association that sent part of it is still open, the last one to end was
released normally (not aborted, not cut, not closed by us for staying silent), and nothing of it
has arrived for a quiet period. A study whose sender aborted or vanished mid-study is *held*:
never screened as it is, until an association that starts sending it after that (a re-send) is
released; a release by another association that was already sending it when the first one went
away does not clear it. Studies an earlier process left in the folder are held the same way,
since whether they were whole is not known.

Layout: ``<folder>/<study key>/<instance key>.dcm``, each file written atomically under the
inbox's lock (so no file is half-written while a study is taken), keys from
:func:`cs3f.io.outputs.study_keys` (never a path from a DICOM value). Studies taken for
screening move to ``<folder>/.batch-<n>/`` (one rename each), so a listener that is killed while
screening leaves them in the folder, where the next one holds them (merged with anything of
them received since: a file name is an instance, so nothing is lost or doubled).

A job that retrieves studies one at a time (C-MOVE) tells the inbox which study it expects
(:meth:`Inbox.expect`): instances of any other study are refused, so a late or unsolicited
push never joins what is screened. The listener's inbox keeps only the series a job screens
from (``wanted``: of the modality, and body part, of the settings, as ``pacs`` retrieves them);
instances of other series are acknowledged and dropped.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from cs3f.io.outputs import atomic_path, pseudonym, study_keys

__all__ = ["Batch", "Inbox", "Received", "folder_key"]

LOG = logging.getLogger("cs3f.app")  # the app's log, as cs3f.screening's
BATCH_PREFIX = ".batch-"
STORED, NOT_AUTHORISED = 0x0000, 0x0124  # C-STORE statuses (PS3.7 C.4: Refused: Not Authorized)
CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0xC000, 0xA700


def folder_key(uid: str) -> str:
    """The file-name stem of one UID: the UID itself when it is a safe, valid one."""
    return study_keys([uid], "unnamed")[0]


@dataclass(frozen=True)
class Received:
    """A study handed over for screening: its folder name, StudyInstanceUID, instance count."""

    key: str
    uid: str
    instances: int


@dataclass(frozen=True)
class Batch:
    """Studies taken for screening, each in ``folder / study.key``."""

    folder: Path
    studies: list[Received]


@dataclass
class _Study:
    key: str
    uid: str = ""  # its StudyInstanceUID ("" for one an earlier process left, until sent again)
    instances: int = 0
    last: float = 0.0  # clock time of the last instance or association end
    senders: dict[int, int] = field(default_factory=dict)  # open association -> when it joined
    held: bool = False  # see the module docstring
    held_since: int = 0  # the event number of the abort that held it


class Inbox:
    """A folder of received studies and what is known of their completeness. Thread-safe:
    pynetdicom calls the ``handle_*`` methods from association threads.

    Args:
        folder: created if absent; study folders already in it are held.
        clock: seconds, monotonic (tests pass their own).
        wanted: whether an instance of (Modality, BodyPartExamined) is kept; None: all are.
    """

    def __init__(
        self,
        folder: Path,
        clock: Callable[[], float] = time.monotonic,
        wanted: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.folder, self.clock, self.wanted = Path(folder), clock, wanted
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._studies: dict[str, _Study] = {}
        self._batches = self._events = 0
        self._expected: frozenset[str] | None = None
        self._logged: set[tuple[str, str]] = set()
        for part in self.folder.rglob("*.part"):  # a write cut short by a kill
            part.unlink()
        for batch in sorted(self.folder.glob(f"{BATCH_PREFIX}*")):  # a screening cut short
            for study in sorted(batch.iterdir()):
                _merge(study, self.folder / study.name)
            batch.rmdir()
        for study in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            count = sum(1 for _ in study.glob("*.dcm"))
            self._studies[study.name] = _Study(study.name, "", count, clock(), held=True)

    # ----- receiving

    def expect(self, study_uids: Collection[str] | None) -> None:
        """Accept instances of these studies only (none for an empty collection); ``None``
        (the default): of any study."""
        with self._lock:
            self._expected = None if study_uids is None else frozenset(study_uids)

    def accepts(self, study_uid: str) -> bool:
        """Whether instances of ``study_uid`` are accepted now (see :meth:`expect`)."""
        with self._lock:
            return self._expected is None or study_uid in self._expected

    def add(self, sender: int, study_uid: str, instance_uid: str, data: bytes) -> None:
        """Keep one instance (``data``: the DICOM file's bytes) of ``study_uid`` sent over the
        association ``sender``; one sent again replaces the earlier copy.

        Raises:
            OSError: the file could not be written (nothing of it is kept).
        """
        key = folder_key(study_uid)
        path = self.folder / key / f"{folder_key(instance_uid)}.dcm"
        with self._lock:
            new = not path.exists()
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
            study = self._studies.get(key)
            if study is None:
                study = self._studies[key] = _Study(key)
                LOG.info("receiving study %s", pseudonym(key))
            study.uid = study_uid
            if sender not in study.senders:
                self._events += 1
                study.senders[sender] = self._events
            study.instances += new
            study.last = self.clock()

    def ended(self, sender: int, released: bool, why: str = "") -> None:
        """The association ``sender`` ended: released normally, or not (``why``: how it
        ended). A second call for the same association changes nothing."""
        with self._lock:
            for study in self._studies.values():
                joined = study.senders.pop(sender, None)
                if joined is None:
                    continue
                study.last = self.clock()
                if released:
                    study.held = study.held and joined < study.held_since
                    continue
                self._events += 1
                study.held, study.held_since = True, self._events
                LOG.warning(
                    "study %s: %s after %d instances; held until it is sent again",
                    pseudonym(study.key),
                    why or "its sender went away mid-association",
                    study.instances,
                )

    def handle_store(self, event) -> int:
        """pynetdicom's EVT_C_STORE handler: keeps the instance as the peer encoded it."""
        try:
            dataset = event.dataset
            study_uid, instance_uid = str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID)
            series = (str(dataset.get("Modality", "")), str(dataset.get("BodyPartExamined", "")))
        except Exception:  # noqa: BLE001  (any undecodable or UID-less dataset is refused)
            return CANNOT_UNDERSTAND
        if not self.accepts(study_uid):
            self._once(study_uid, logging.WARNING, "refused instances of study %s: not asked for")
            return NOT_AUTHORISED
        if self.wanted is not None and not self.wanted(*series):
            self._once(study_uid, logging.INFO, "study %s: series of another kind not kept")
            return STORED
        try:
            self.add(id(event.assoc), study_uid, instance_uid, event.encoded_dataset())
        except OSError as exc:
            LOG.error("could not keep a received instance: %s", exc)
            return OUT_OF_RESOURCES
        return STORED

    def _once(self, study_uid: str, level: int, message: str) -> None:
        """Log ``message`` (%s: the study's tag) the first time for this study."""
        key = folder_key(study_uid)
        with self._lock:
            first = (key, message) not in self._logged
            self._logged.add((key, message))
        if first:
            LOG.log(level, message, pseudonym(key))

    def handle_released(self, event) -> None:
        """pynetdicom's EVT_RELEASED handler."""
        self.ended(id(event.assoc), released=True)

    def handle_aborted(self, event) -> None:
        """pynetdicom's EVT_ABORTED handler: by the peer, or by us when the association stayed
        silent for the network timeout."""
        assoc = event.assoc
        silent = assoc.is_acceptor and assoc.dul.idle_timer_expired()
        why = (
            f"its sender stayed silent for {assoc.network_timeout:g} s without releasing the "
            "association, which we then closed (senders must release)"
            if silent
            else "its sender aborted the association"
        )
        self.ended(id(assoc), released=False, why=why)

    def handle_close(self, event) -> None:
        """pynetdicom's EVT_CONN_CLOSE handler: a connection that closed with neither a release
        nor an abort (after one of them, nothing changes)."""
        self.ended(id(event.assoc), released=False, why="its sender's connection dropped")

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

    def _complete(self, study: _Study, now: float, quiet_s: float) -> bool:
        return not study.senders and not study.held and now - study.last >= quiet_s

    def complete(self, quiet_s: float) -> list[str]:
        """Keys of the studies that are complete: no open sender, not held, and ``quiet_s``
        seconds since their last instance or sender's end."""
        with self._lock:
            now = self.clock()
            return sorted(s.key for s in self._studies.values() if self._complete(s, now, quiet_s))

    def held(self) -> list[str]:
        """Keys of the held studies (see the module docstring)."""
        with self._lock:
            return sorted(s.key for s in self._studies.values() if s.held)

    # ----- handing over

    def take(self, keys: Collection[str], quiet_s: float, minimum: int = 1) -> Batch | None:
        """Move those of the studies ``keys`` that are still complete (:meth:`complete`, checked
        again under the lock, so that no association is sending them) into a new batch folder
        inside the inbox; ``None`` (nothing moved) when fewer than ``minimum`` are. Instances
        of them that arrive later start them anew."""
        with self._lock:
            now = self.clock()
            ready = [
                self._studies[k]
                for k in sorted(keys)
                if k in self._studies and self._complete(self._studies[k], now, quiet_s)
            ]
            if not ready or len(ready) < minimum:
                return None
            self._batches += 1
            folder = self.folder / f"{BATCH_PREFIX}{self._batches}"
            folder.mkdir()
            for study in ready:
                self._move(study.key, folder)
            return Batch(folder, [Received(s.key, s.uid, s.instances) for s in ready])

    def hand_over(self, study_uid: str, folder: Path) -> Received:
        """Move the study into ``folder`` (created if absent), whatever its senders, and forget
        it: for a study a retrieval reported whole.

        Raises:
            KeyError: the inbox holds nothing of it.
        """
        with self._lock:
            study = self._studies[folder_key(study_uid)]
            Path(folder).mkdir(parents=True, exist_ok=True)
            self._move(study.key, Path(folder))
            return Received(study.key, study.uid, study.instances)

    def _move(self, key: str, folder: Path) -> None:
        """With the lock held: the study's folder into ``folder``, and the study forgotten."""
        del self._studies[key]
        self._logged = {entry for entry in self._logged if entry[0] != key}
        (self.folder / key).rename(folder / key)

    def discard(self, study_uid: str) -> None:
        """Forget the study and delete what was kept of it (a retrieval that failed)."""
        key = folder_key(study_uid)
        with self._lock:
            self._studies.pop(key, None)
            shutil.rmtree(self.folder / key, ignore_errors=True)


def _merge(study: Path, target: Path) -> None:
    """Move a study folder left in a batch back to ``target``; where ``target`` exists (the
    study was sent again while it was being screened), its files join it, the newer copy of an
    instance in both kept."""
    if not target.exists():
        study.rename(target)
        return
    for file in study.iterdir():
        if (target / file.name).exists():
            file.unlink()
        else:
            file.rename(target / file.name)
    study.rmdir()
