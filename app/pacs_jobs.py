"""What ``python -m app pacs`` and ``python -m app listen`` share: screen a folder of studies
received from the PACS with the app's own run (:func:`app.run.run_app`: the same graph, outputs
and rules as ``python -m app``), send each screened study's SEG and SR back
(:func:`cs3f.pacs.send.send_results`), and record what became of every study in
``pacs.json`` beside the run's other outputs.

A study's ``status`` in ``pacs.json``:

| status | meaning | counts as failed |
| --- | --- | --- |
| ``in the PACS`` | its results were already there (sent by an earlier run); nothing done | no |
| ``sent`` | screened now, SEG and SR stored in the PACS (any already there skipped) | no |
| ``reference`` | its results were already there; retrieved again only to complete the batch | no |
| ``skipped`` | no series matched the selection rules (the reason says what it had) | no |
| ``not retrieved`` | the PACS did not deliver it whole; nothing of it was screened or sent | yes |
| ``failed`` | the screening failed on it (the reason says where); nothing sent | yes |
| ``not sent`` | screened, but the PACS did not store its results (``sent``: any it did) | yes |
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.run import run_app, run_info
from app.settings import AppSettings
from cs3f.bank import ReferenceBank
from cs3f.encoders import SliceEncoder
from cs3f.io.outputs import pseudonym, write_text
from cs3f.io.result_uids import result_uids
from cs3f.pacs import PacsError
from cs3f.pacs.inbox import folder_key
from cs3f.pacs.network import association, find_context, is_present
from cs3f.pacs.send import send_results

__all__ = ["FAILED", "Job", "Outcome"]

LOG = logging.getLogger("cs3f.app")
FAILED = ("not retrieved", "failed", "not sent")


@dataclass
class Outcome:
    """What became of one study (see the module docstring for ``status``).

    Attributes:
        instances: instances retrieved or received.
        sent, present: SOP instance UIDs of its results stored now / already in the PACS.
    """

    study_instance_uid: str
    pseudonym: str
    status: str = ""
    reason: str = ""
    instances: int = 0
    sent: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


class Job:
    """One screening of studies from the PACS into ``output`` and the results back to it."""

    def __init__(
        self,
        settings: AppSettings,
        encoder: SliceEncoder,
        bank: ReferenceBank | None,
        output: Path,
    ) -> None:
        self.settings, self.encoder, self.bank, self.output = settings, encoder, bank, output
        self.outcomes: dict[str, Outcome] = {}
        self.error = ""

    def outcome(self, study_uid: str) -> Outcome:
        """The study's outcome, created on first use."""
        if study_uid not in self.outcomes:
            tag = pseudonym(folder_key(study_uid))
            self.outcomes[study_uid] = Outcome(study_uid, tag)
        return self.outcomes[study_uid]

    def note(self, study_uid: str, status: str, reason: str = "") -> None:
        """Set the study's status; a failure is logged with its reason."""
        outcome = self.outcome(study_uid)
        outcome.status, outcome.reason = status, reason
        if status in FAILED:
            LOG.warning("study %s: %s: %s", outcome.pseudonym, status, reason)
        elif status == "sent":
            LOG.info("study %s: SEG and SR in the PACS", outcome.pseudonym)

    def in_pacs(self, study_uids: Iterable[str]) -> set[str]:
        """The studies among ``study_uids`` whose SEG and SR the PACS already holds: their
        UIDs derive from the study and this run's settings (:mod:`cs3f.io.result_uids`), so
        one instance-level C-FIND each says whether they are there.

        Raises:
            PacsError: the PACS cannot be reached, refuses, or fails a query.
        """
        seed = self.settings.results_seed(self.encoder, self.bank)
        done = set()
        with association(self.settings.pacs, [find_context()]) as assoc:
            for uid in study_uids:
                derived = [result_uids(seed, uid)[kind] for kind in ("seg", "sr")]
                if all(is_present(assoc, uid, d.series, d.instance) for d in derived):
                    done.add(uid)
        return done

    def screen_and_send(self, folder: Path, send: Collection[str] | None = None) -> None:
        """Screen the studies in ``folder`` (any nesting) and send the results of the scored
        ones among ``send`` (StudyInstanceUIDs; None: all) to the PACS. A batch that cannot be
        scored as a whole sets :attr:`error`."""
        application = run_app(
            folder,
            self.output,
            self.output,
            "dicom",
            settings=self.settings,
            encoder=self.encoder,
            run=run_info(self.settings, self.encoder, self.bank),
            bank=self.bank,
        )
        written = application.report.result if application.report else None
        if written is None:
            self.error = "the screening stopped before writing its results"
            return
        self.error = written.ledger.error
        files = {}
        for row in written.ledger.rows:
            uid = row.study_instance_uid
            if send is not None and uid not in send:
                self.note(uid, "reference")
            elif row.status != "scored":
                self.note(uid, row.status, row.reason)
            else:
                files[uid] = [self.output / kind / f"{row.key}.dcm" for kind in ("seg", "sr")]
        if files:
            self._send(files)

    def _send(self, files: dict[str, list[Path]]) -> None:
        LOG.info("sending the results of %d studies to %s", len(files), self.settings.pacs.peer)
        try:
            results = send_results(self.settings.pacs, files)
        except PacsError as exc:
            for uid in files:
                self.note(uid, "not sent", str(exc))
            return
        for uid, sent in results.items():
            outcome = self.outcome(uid)
            outcome.sent, outcome.present = sent.sent, sent.present
            if sent.error:
                self.note(uid, "not sent", sent.error)
            else:
                self.note(uid, "sent")

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.status in FAILED]

    def write_summary(self, **facts) -> None:
        """``pacs.json``: ``facts`` (the PACS, the query, ...), the job's error and every
        study's outcome, in StudyInstanceUID order; and a one-line count in the log."""
        studies = [asdict(self.outcomes[uid]) for uid in sorted(self.outcomes)]
        summary = {**facts, "error": self.error, "studies": studies}
        write_text(self.output / "pacs.json", json.dumps(summary, indent=2))
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        LOG.info("studies: %s", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
