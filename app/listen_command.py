"""``python -m app listen``: a C-STORE SCP that screens the studies it is sent and pushes the
results back to the PACS.

    python -m app listen --port PORT --aet OURS --pacs HOST:PORT --called-aet AET -o OUT
        [--bank BANK] [--allow-aet AET ...] [--tls --tls-cert PEM --tls-key PEM [--tls-ca PEM]]
        [the settings flags of python -m app]

Only the PACS's AE title (``--called-aet``) and those of ``--allow-aet`` may send; any other
association is rejected. Instances are kept per study in ``OUT/inbox/``; a study is complete
once no association is still sending it, its last sender released the association normally
and ``pacs.quiet_s`` seconds (default 10) passed without a new instance of it. A study whose
sender aborted or vanished mid-study is held, never screened in part, until it is sent again
(:mod:`cs3f.pacs.inbox`). Then:

- with ``--bank``: every complete study is screened against the bank (each on its own);
- without: complete studies wait until ``pacs.batch_studies`` of them (default 2) are complete,
  and are then screened together as one batch, each against the others, as ``python -m app``
  does; a study is never screened alone, and a batch under about 20 studies gives a warning
  (the method's quality drops): give a bank, or raise ``pacs.batch_studies``.

First the PACS is asked whether it already holds their SEG and SR (the same study sent
again): such a study is not screened again (in a batch it is only a reference). Each screening
writes the usual outputs and ``pacs.json`` into ``OUT/runs/<UTC time>/``, sends each screened
study's SEG and SR to the PACS (none twice: see :mod:`app.pacs_jobs`), and deletes the
instances it screened. ``OUT/run.log`` logs it all, studies by pseudonym only.
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
from pathlib import Path

from app.pacs_commands import UNREACHABLE, common_flags, load
from app.pacs_jobs import Job
from app.run import error, start_logging
from cs3f.io.run_folder import WORK_PREFIX, prepare_output
from cs3f.pacs import PacsError
from cs3f.pacs.inbox import Inbox
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


def _screen_batch(job: Job, inbox: Inbox, keys: list[str], send: set[str]) -> None:
    batch = inbox.take(keys)
    LOG.info("screening %d complete studies into %s", len(keys), job.output)
    try:
        job.screen_and_send(batch, send=send)
    except Exception as exc:  # noqa: BLE001  (the listener goes on with the next studies)
        job.error = f"the screening stopped: {type(exc).__name__}"
        LOG.exception("the screening stopped")
    finally:
        shutil.rmtree(batch, ignore_errors=True)


def _screen(job: Job, inbox: Inbox, keys: list[str]) -> None:
    """Screen the complete studies ``keys`` whose results the PACS does not hold yet (in a
    batch, with the others as references), send their results, write ``pacs.json``."""
    uids = {key: inbox.study_uid(key) for key in keys}
    for uid in uids.values():
        job.outcome(uid).instances = inbox.count(uid)
    todo = _not_in_pacs(job, list(uids.values()))
    if job.bank is not None or not todo:  # against a bank each study stands alone
        for key in keys:
            if uids[key] not in todo:
                inbox.discard(uids[key])
        keys = [key for key in keys if uids[key] in todo]
    if keys:
        _screen_batch(job, inbox, keys, todo)
    else:
        LOG.info("their results are all in the PACS already: nothing to screen")
    job.write_summary(pacs=job.settings.pacs.peer, studies_received=len(uids))
    if job.error:
        LOG.error("%s", job.error)


def _serve(stop: threading.Event, inbox: Inbox, settings, encoder, bank, output: Path) -> None:
    """Screen complete studies as they come, until ``stop`` is set."""
    pacs, waiting = settings.pacs, 0
    _stop_on_signals(stop)
    while not stop.wait(POLL_S):
        ready = inbox.complete(pacs.quiet_s)
        if bank is None and len(ready) < pacs.batch_studies:
            if ready and len(ready) != waiting:
                LOG.info(
                    "%d complete studies wait for %d more to form a batch (no bank given)",
                    len(ready),
                    pacs.batch_studies - len(ready),
                )
            waiting = len(ready)
            continue
        if ready:
            _screen(Job(settings, encoder, bank, _run_folder(output)), inbox, ready)
            _stop_on_signals(stop)  # Holoscan installs its own handlers while it runs
            waiting = 0
    LOG.info("stopping; %d studies stay in the inbox", len(inbox))


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
    inbox = Inbox(args.output / "inbox")
    if inbox.held():
        LOG.warning(
            "%d studies left in the inbox by an earlier listener are held until sent again",
            len(inbox.held()),
        )
    stop = threading.Event()
    try:
        with StorageServer(settings.pacs, settings.pacs.listen_port, inbox):
            _serve(stop, inbox, settings, encoder, bank, args.output)
    except PacsError as exc:
        LOG.error("%s", exc)
        return UNREACHABLE
    return 0
