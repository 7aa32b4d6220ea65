"""``python -m app listen``: a C-STORE SCP that screens the studies it is sent and pushes the
results back to the PACS.

    python -m app listen --port PORT --aet OURS --pacs HOST:PORT --called-aet AET -o OUT
        [--bank BANK] [--allow-aet AET ...] [--bind ADDRESS] [--modality MR] [--body-part PATTERN]
        [--tls --tls-cert PEM --tls-key PEM [--tls-ca PEM]] [the settings flags of python -m app]

Our SCP listens on ``--bind`` (``pacs.bind``; default 127.0.0.1, this machine only). Only the
PACS's AE title (``--called-aet``) and those of ``--allow-aet`` may send; any other association
is rejected (an AE title is no authentication: TLS with client certificates is). Instances of
series of ``--modality`` (``pacs.modality``, default MR) and, if given, ``--body-part`` are kept
per study in ``OUT/inbox/``, as ``pacs`` retrieves them (others are acknowledged and dropped);
a study is complete once no association is still sending it,
its last sender released the association normally and ``pacs.quiet_s`` seconds (default 10)
passed without a new instance of it. A study whose sender aborted, vanished, or stayed silent
for ``pacs.scp_timeout_s`` without releasing is held, never screened in part, until it is sent
again (:mod:`cs3f.pacs.inbox`). Then:

- with ``--bank``: every complete study is screened against the bank (each on its own);
- without: complete studies wait until ``pacs.batch_studies`` of them (default 2) are complete,
  and are then screened together as one batch, each against the others, as ``python -m app``
  does; a study is never screened alone, and a batch under about 20 studies gives a warning
  (the method's quality drops): give a bank, or raise ``pacs.batch_studies``.

Complete studies are taken out of the inbox at once (an association that starts sending one of
them later starts it anew), then the PACS is asked whether it already holds their SEG and SR
(the same study sent again): such a study is not screened again (in a batch it is only a
reference). Each screening writes the usual outputs and ``pacs.json`` into
``OUT/runs/<UTC time>/``, sends each screened study's SEG and SR to the PACS (none twice: see
:mod:`app.pacs_jobs`), and deletes the instances it screened; results the PACS did not take
stay in their run folder and are sent again every ``pacs.retry_s`` seconds (default 60), also
after a restart, until it takes them. ``OUT/run.log`` logs it all, studies by pseudonym only;
a failure in one round never stops the listener.
SIGTERM or SIGINT stops the listener (exit 0) between screenings; one that arrives during a
screening stops the process there (Holoscan's handler), and the studies being screened stay in
the inbox, held. Exit codes: 0 stopped; 2 bad arguments, settings, bank or output folder; 3 the
port cannot be listened on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import signal
import threading
import time
from pathlib import Path

from app.pacs_commands import UNREACHABLE, common_flags, load
from app.pacs_jobs import Job
from app.run import error, start_logging
from app.settings import AppSettings
from cs3f.bank import ReferenceBank
from cs3f.encoders import SliceEncoder
from cs3f.io.run_folder import WORK_PREFIX, prepare_output
from cs3f.pacs import PacsError
from cs3f.pacs.inbox import Batch, Inbox
from cs3f.pacs.server import StorageServer
from cs3f.redaction import IDENTIFIERS

LOG = logging.getLogger("cs3f.app")
POLL_S = 1.0
ENTRIES = ("inbox", "runs", "run.log")
"""What the listener keeps in its output folder."""


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app listen",
        description="receive studies over C-STORE, screen each complete one, push the results",
    )
    common_flags(parser)
    parser.add_argument("--port", type=int, help="our C-STORE port (pacs.listen_port)")
    return parser.parse_args(argv)


def _check_output(output: Path) -> str | None:
    if output.exists() and not output.is_dir():
        return f"the output {output} is a file, not a folder"
    output.mkdir(parents=True, exist_ok=True)
    foreign = [
        p.name
        for p in output.iterdir()
        if p.name not in ENTRIES and not p.name.startswith(WORK_PREFIX)
    ]
    if foreign:
        return (
            f"the output folder holds {len(foreign)} entries a listener does not write "
            f"(e.g. {foreign[0]!r}); give an empty folder or a listener's"
        )
    return None


def _run_folder(output: Path) -> Path:
    """A new folder ``OUT/runs/<UTC time>[-n]/`` for one screening."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder, n = output / "runs" / stamp, 1
    while folder.exists():
        n += 1
        folder = output / "runs" / f"{stamp}-{n}"
    prepare_output(folder, overwrite=False)
    return folder


def _stop_on_signals(stop: threading.Event) -> None:
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())


def _not_in_pacs(job: Job, study_uids: list[str]) -> set[str]:
    """The studies whose results the PACS does not hold yet (all, if it cannot say)."""
    try:
        done = job.in_pacs(study_uids)
    except PacsError as exc:
        LOG.warning("cannot ask the PACS for earlier results (%s); screening them all", exc)
        done = set()
    for uid in done:
        job.note(uid, "in the PACS")
    return set(study_uids) - done


def _screen(job: Job, batch: Batch, stop: threading.Event) -> bool:
    """Screen the studies of ``batch`` whose results the PACS does not hold yet (in a batch,
    with the others as references), send their results, write ``pacs.json``. Returns False
    when ``stop`` was set before the screening began: nothing done, the batch left as it is."""
    for study in batch.studies:
        job.outcome(study.uid).instances = study.instances
    todo = _not_in_pacs(job, [s.uid for s in batch.studies])
    if job.bank is not None:  # against a bank each study stands alone
        for study in batch.studies:
            if study.uid not in todo:
                shutil.rmtree(batch.folder / study.key)
    if todo and stop.is_set():
        return False
    if todo:
        LOG.info("screening %d complete studies into %s", len(batch.studies), job.output)
        try:
            job.screen_and_send(batch.folder, send=todo)
        except Exception as exc:  # noqa: BLE001  (the listener goes on with the next studies)
            job.error = f"the screening stopped: {type(exc).__name__}"
            LOG.exception("the screening stopped")
    else:
        LOG.info("their results are all in the PACS already: nothing to screen")
    job.write_summary(pacs=job.settings.pacs.peer, studies_received=len(batch.studies))
    if job.error:
        LOG.error("%s", job.error)
    return True


class Listener:
    """What the listener does each round: screen the complete studies, send results again.

    Args:
        output: the listener's output folder (``inbox/``, ``runs/``, ``run.log``).
    """

    def __init__(
        self,
        inbox: Inbox,
        settings: AppSettings,
        encoder: SliceEncoder,
        bank: ReferenceBank | None,
        output: Path,
    ) -> None:
        self.inbox, self.settings, self.encoder, self.bank = inbox, settings, encoder, bank
        self.output, self.waiting = output, 0
        self.unsent = sorted(p.parent for p in (output / "runs").glob("*/pacs.json"))
        self.next_retry = 0.0

    def screen(self, stop: threading.Event) -> None:
        """Take the complete studies (at least ``pacs.batch_studies`` without a bank) and
        screen them."""
        pacs = self.settings.pacs
        minimum = 1 if self.bank is not None else pacs.batch_studies
        ready = self.inbox.complete(pacs.quiet_s)
        if len(ready) < minimum:
            if ready and len(ready) != self.waiting:
                LOG.info(
                    "%d complete studies wait for %d more to form a batch (no bank given)",
                    len(ready),
                    minimum - len(ready),
                )
            self.waiting = len(ready)
            return
        batch = self.inbox.take(ready, pacs.quiet_s, minimum)
        if batch is None:  # sent again since: not complete any more
            return
        self.waiting = 0
        run = _run_folder(self.output)
        job = Job(self.settings, self.encoder, self.bank, run)
        IDENTIFIERS.clear()  # the identifiers of this screening's studies only
        if _screen(job, batch, stop):
            shutil.rmtree(batch.folder, ignore_errors=True)
            if any(o.status == "not sent" for o in job.outcomes.values()):
                self.unsent.append(run)
        else:
            shutil.rmtree(run, ignore_errors=True)
            LOG.info("stopping: %d studies stay in the inbox, held", len(batch.studies))

    def resend(self) -> None:
        """Every ``pacs.retry_s``: send again the results the PACS did not take."""
        if not self.unsent or time.monotonic() < self.next_retry:
            return
        self.next_retry = time.monotonic() + self.settings.pacs.retry_s
        still = []
        for run in self.unsent:
            try:
                job, facts = Job.reopen(self.settings, run)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                LOG.warning("cannot read %s/pacs.json to send its results again: %s", run, exc)
                continue
            if any(o.status == "not sent" for o in job.outcomes.values()):
                LOG.info("sending again the results the PACS did not take (%s)", run.name)
                if job.resend():
                    still.append(run)
                job.write_summary(**facts)
        self.unsent = still


def _serve(stop: threading.Event, listener: Listener) -> None:
    """Screen complete studies as they come, until ``stop`` is set; one round that fails is
    logged and the next one begins."""
    _stop_on_signals(stop)
    while not stop.wait(POLL_S):
        try:
            listener.screen(stop)
            listener.resend()
        except Exception:  # noqa: BLE001  (one round's failure never stops the listener)
            LOG.exception("a round of the listener failed; it goes on")
        _stop_on_signals(stop)  # Holoscan installs its own handlers while it runs
    LOG.info("stopping; %d studies stay in the inbox", len(listener.inbox))


def listen_main(argv: list[str]) -> int:
    """``python -m app listen``; see the module docstring."""
    args = _arguments(argv)
    try:
        settings, encoder, bank = load(args)
    except SystemExit as exc:
        return int(exc.code)
    problem = _check_output(args.output)
    if problem:
        return error(problem)
    IDENTIFIERS.clear()
    start_logging(args.output)
    try:
        inbox = Inbox(args.output / "inbox", wanted=settings.pacs.wants)
    except OSError as exc:
        return error(f"cannot use the inbox {args.output / 'inbox'}: {exc}")
    if inbox.held():
        LOG.warning(
            "%d studies left in the inbox by an earlier listener are held until sent again",
            len(inbox.held()),
        )
    stop = threading.Event()
    try:
        with StorageServer(settings.pacs, settings.pacs.listen_port, inbox):
            _serve(stop, Listener(inbox, settings, encoder, bank, args.output))
    except PacsError as exc:
        LOG.error("%s", exc)
        return UNREACHABLE
    return 0
