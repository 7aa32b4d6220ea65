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
| ``failed`` | the screening failed on it or did not find it (the reason says); nothing sent | yes |
| ``not sent`` | screened, but the PACS did not store its results (``sent``: any it did) | yes |

A study's results (``files``, relative to the output folder) stay there: a study ``not sent``
can be sent again from them (:meth:`Job.resend`).
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
from cs3f.pacs.network import association, find_context, study_series
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
        files: its result objects to send (SEG, SR), relative to the output folder.
    """

    study_instance_uid: str
    pseudonym: str
    status: str = ""
    reason: str = ""
    instances: int = 0
    sent: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class Job:
    """One screening of studies from the PACS into ``output`` and the results back to it.
    ``encoder`` None: a job that only sends (:meth:`resend`)."""

    def __init__(
        self,
        settings: AppSettings,
        encoder: SliceEncoder | None,
        bank: ReferenceBank | None,
        output: Path,
    ) -> None:
        self.settings, self.encoder, self.bank, self.output = settings, encoder, bank, output
        self.seed = settings.results_seed(encoder, bank) if encoder else ""
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
        series UIDs derive from the study, its series screened and this job's seed
        (:mod:`cs3f.io.result_uids`), so one SERIES-level C-FIND per study says whether, for a
        series of it, both are there. (Which series the rules would choose needs the
        instances; a series they chose under the same seed, and so the same rules, counts.)

        Raises:
            PacsError: the PACS cannot be reached, refuses, or fails a query.
        """
        done = set()
        with association(self.settings.pacs, [find_context()]) as assoc:
            for uid in study_uids:
                series = study_series(assoc, uid)
                for source in series:
                    derived = result_uids(self.seed, uid, source)
                    if derived["seg"].series in series and derived["sr"].series in series:
                        done.add(uid)
                        break
        return done

    def screen_and_send(self, folder: Path, send: Collection[str]) -> None:
        """Screen the studies in ``folder`` (any nesting) and send the results of the scored
        ones among ``send`` (StudyInstanceUIDs; the others are references) to the PACS. A study
        of ``send`` the screening did not report on fails; a batch that cannot be scored as a
        whole sets :attr:`error`."""
        application = run_app(
            folder,
            self.output,
            self.output,
            "dicom",
            settings=self.settings,
            encoder=self.encoder,
            run=run_info(self.settings, self.encoder, self.bank),
            bank=self.bank,
            results_seed=self.seed,
        )
        written = application.report.result if application.report else None
        if written is None:
            self.error = "the screening stopped before writing its results"
            return
        self.error = written.ledger.error
        files = {}
        for row in written.ledger.rows:
            uid = row.study_instance_uid
            if uid not in send:
                self.note(uid, "reference")
            elif row.status != "scored":
                self.note(uid, row.status, row.reason)
            else:
                self.outcome(uid).files = [f"{kind}/{row.key}.dcm" for kind in ("seg", "sr")]
                files[uid] = [self.output / f for f in self.outcome(uid).files]
        for uid in send:
            if not self.outcome(uid).status and uid not in files:
                self.note(uid, "failed", "not found by the screening")
        if files:
            self._send(files)

    def resend(self) -> int:
        """Send again the results of the studies ``not sent`` (those whose files are here);
        returns how many are still not sent."""
        files = {
            uid: [self.output / f for f in o.files]
            for uid, o in self.outcomes.items()
            if o.status == "not sent" and o.files
        }
        if files:
            self._send(files)
        return sum(o.status == "not sent" for o in self.outcomes.values())

    @classmethod
    def reopen(cls, settings: AppSettings, output: Path) -> tuple[Job, dict]:
        """The job whose ``pacs.json`` is in ``output``, to :meth:`resend` from, and the facts
        it recorded (for :meth:`write_summary`).

        Raises:
            OSError, ValueError, TypeError: no readable ``pacs.json`` of this version there.
        """
        summary = json.loads((output / "pacs.json").read_text(encoding="utf-8"))
        job = cls(settings, None, None, output)
        studies = summary.pop("studies")
        job.error = summary.pop("error")
        for study in studies:
            job.outcomes[study["study_instance_uid"]] = Outcome(**study)
        return job, summary

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
            outcome.sent += sent.sent
            outcome.present += sent.present
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
