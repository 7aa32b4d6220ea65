"""``python -m app pacs``: pull studies from a PACS, screen them, push the results back.

    python -m app pacs --pacs HOST:PORT --called-aet AET --aet OURS -o OUT [--modality MR]
        [--study-date FROM-TO] [--study-description PATTERN] [--body-part PATTERN]
        [--move-port PORT] [--bank BANK] [--tls --tls-cert PEM --tls-key PEM --tls-ca PEM]
        [the settings flags of python -m app] [--overwrite]

1. C-FIND at study level (modality, date range, description); for each match, whether its SEG
   and SR (whose UIDs derive from the study, its series screened, this version, the settings,
   the selection rules, the modality and body part, and the reference, as the listener's do:
   :mod:`cs3f.io.result_uids`) are already in the PACS: such a study is done.
2. The others are retrieved, by C-GET, or by C-MOVE to our own C-STORE SCP with
   ``--move-port`` (series of the modality only, each study whole or not at all: see
   :mod:`cs3f.pacs.retrieve`), one at a time into a work folder that never outlives the run;
   our SCP refuses instances of any study but the one being retrieved, and only a study whose
   retrieval succeeded moves on to the folder that is screened. Against a bank only they are
   retrieved; a batch needs the others too, as references (their results, already in the PACS,
   are not sent again): every matching study is retrieved then, however many.
3. The app's own run screens them into OUT (as ``python -m app``), and each screened study's
   SEG and SR go back to the PACS; ``OUT/pacs.json`` says what became of every study
   (:mod:`app.pacs_jobs`).

Exit codes: 0 every matching study has its results in the PACS (or was skipped: no series of
images of the modality, or none matched the series rules; or none matched); 1 the batch could
not be scored as a whole; 2 bad arguments, settings, bank or output folder; 3 no exchange with
the PACS was possible (it cannot be reached, refused the association or the query, or the
C-MOVE port cannot be opened): nothing was retrieved or sent; 4 some studies were not
retrieved, screened or sent, the others were (pacs.json: which, and why).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path

from app.pacs_jobs import Job
from app.run import error, open_bank, settings_and_encoder, settings_flags, start_run
from app.settings import AppSettings
from cs3f import __version__
from cs3f.io.run_folder import work_folder
from cs3f.pacs import NothingToRetrieve, PacsError
from cs3f.pacs.config import PacsSettings, parse_address
from cs3f.pacs.inbox import Inbox
from cs3f.pacs.network import association, find_context, find_studies
from cs3f.pacs.retrieve import IMAGE_STORAGE, TRANSFER_SYNTAXES, retrieve_study
from cs3f.pacs.server import StorageServer
from cs3f.progress import Progress
from cs3f.screening import MIN_STUDIES

LOG = logging.getLogger("cs3f.app")
UNREACHABLE = 3
SOME_FAILED = 4


def common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``pacs`` and ``listen`` share: the PACS, our AE title, TLS, the output
    folder, the bank and the settings flags. Each fills a ``pacs.*`` setting (see
    :class:`~cs3f.pacs.config.PacsSettings`), over the YAML file and ``--set``."""
    parser.add_argument("--pacs", metavar="HOST:PORT", help="the PACS (pacs.host, pacs.port)")
    parser.add_argument("--called-aet", help="the PACS's AE title (pacs.called_aet)")
    parser.add_argument("--aet", help="this program's AE title (pacs.aet; default CS3F)")
    parser.add_argument(
        "--allow-aet",
        action="append",
        help="a calling AE title our C-STORE SCP accepts besides the PACS's (repeatable; "
        "pacs.allowed_aets); any other is rejected",
    )
    parser.add_argument(
        "--modality",
        help="the Modality of the series screened (pacs.modality; default MR); for pacs also "
        "the studies' ModalitiesInStudy",
    )
    parser.add_argument(
        "--body-part", help="BodyPartExamined pattern of the series screened (pacs.body_part)"
    )
    parser.add_argument(
        "--bind",
        metavar="ADDRESS",
        help="the address our C-STORE SCP listens on (pacs.bind; default 127.0.0.1: this "
        "machine only; 0.0.0.0: every interface)",
    )
    parser.add_argument("--tls", action="store_true", default=None, help="use TLS (pacs.tls)")
    parser.add_argument("--tls-cert", help="our certificate chain, PEM (pacs.tls_cert)")
    parser.add_argument("--tls-key", help="our private key, PEM (pacs.tls_key)")
    parser.add_argument("--tls-ca", help="the peers' trusted certificates, PEM (pacs.tls_ca)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=os.environ.get("HOLOSCAN_OUTPUT_PATH"),
        help="output folder",
    )
    parser.add_argument("--bank", type=Path, help="screen against this reference bank")
    settings_flags(parser)


def pacs_values(args: argparse.Namespace) -> dict:
    """The ``pacs`` settings the flags give (flags not given are left to the settings)."""
    values = {
        "called_aet": args.called_aet,
        "aet": args.aet,
        "allowed_aets": args.allow_aet,
        "bind": args.bind,
        "tls": args.tls,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_ca": args.tls_ca,
    }
    for name in ("modality", "study_date", "study_description", "body_part", "move_port"):
        values[name] = getattr(args, name, None)
    values["listen_port"] = getattr(args, "port", None)
    if args.pacs:
        try:
            values["host"], values["port"] = parse_address(args.pacs)
        except ValueError as exc:
            raise SystemExit(error(f"--pacs: {exc}")) from exc
    return {k: v for k, v in values.items() if v is not None}


def load(args: argparse.Namespace):
    """The run's settings, encoder and bank (or None) from the flags, the PACS's address and
    AE title required.

    Raises:
        SystemExit(2): bad flags or settings, missing weights, an unusable bank, no PACS.
    """
    if args.output is None:
        raise SystemExit(error("give -o (or HOLOSCAN_OUTPUT_PATH)"))
    settings, encoder = settings_and_encoder(args, pacs=pacs_values(args))
    if not settings.pacs.host or not settings.pacs.called_aet:
        raise SystemExit(error("give the PACS: --pacs HOST:PORT and --called-aet AET"))
    bank = open_bank(args.bank, settings, encoder) if args.bank else None
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # our errors say it, once
    return settings, encoder, bank


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app pacs",
        description="pull studies from a PACS, screen them, and push the results back",
    )
    common_flags(parser)
    parser.add_argument("--study-date", help="YYYYMMDD-YYYYMMDD, an end may stay open")
    parser.add_argument("--study-description", help="a pattern, DICOM wildcards * and ?")
    parser.add_argument(
        "--move-port",
        type=int,
        help="retrieve by C-MOVE to our own C-STORE SCP on this port (the PACS must know our "
        "AE title at this host and port); default: C-GET",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run's results in OUT"
    )
    return parser.parse_args(argv)


def _query(pacs: PacsSettings) -> list[str]:
    """The UIDs of the studies matching the query."""
    with association(pacs, [find_context()]) as assoc:
        return find_studies(assoc, pacs)


def retrieve_all(job: Job, fetch: list[str], done: set[str], inbox: Inbox, ready: Path) -> None:
    """Retrieve the studies ``fetch`` one at a time into ``inbox`` (by C-MOVE when our SCP
    runs on ``pacs.move_port``, into ``inbox`` too) and move each that arrived whole into
    ``ready``, noting every study's outcome (``done``: their results are in the PACS already,
    they are retrieved only as references). The inbox accepts instances of the study being
    retrieved only."""
    pacs = job.settings.pacs
    progress = Progress(LOG, "retrieve", len(fetch))
    for uid in fetch:
        inbox.expect({uid})
        try:
            got = retrieve_study(pacs, uid, inbox, bool(pacs.move_port))
        except NothingToRetrieve as exc:
            job.note(uid, "in the PACS" if uid in done else "skipped", str(exc))
        except PacsError as exc:
            if uid in done:  # only a reference: its own results are in the PACS
                job.note(uid, "in the PACS", f"not retrieved as a reference: {exc}")
            else:
                job.note(uid, "not retrieved", str(exc))
        else:
            inbox.expect(())  # nothing more of it joins it from here
            job.outcome(uid).instances = inbox.hand_over(uid, ready).instances
            for why in got.left_out:
                LOG.info("study %s: left out %s", job.outcome(uid).pseudonym, why)
        finally:
            inbox.expect(())
        progress.step()


def _retrieve_and_screen(job: Job, fetch: list[str], todo: list[str], done: set[str]) -> None:
    """Retrieve ``fetch``, screen what arrived whole and send the results of ``todo``."""
    pacs = job.settings.pacs
    with work_folder(job.output) as work:
        inbox, ready = Inbox(work / "incoming"), work / "ready"
        inbox.expect(())  # nothing until a retrieval asks for a study
        server = (
            StorageServer(pacs, pacs.move_port, inbox, IMAGE_STORAGE, TRANSFER_SYNTAXES)
            if pacs.move_port
            else None
        )
        with server or contextlib.nullcontext():
            retrieve_all(job, fetch, done, inbox, ready)
        arrived = [uid for uid in fetch if job.outcome(uid).instances]
        if job.bank is None and len(arrived) < MIN_STUDIES:
            job.error = f"{len(arrived)} studies retrieved; a batch needs at least {MIN_STUDIES}"
        elif any(uid in todo for uid in arrived):
            job.screen_and_send(ready, send=set(todo))


def pacs_main(argv: list[str]) -> int:
    """``python -m app pacs``; see the module docstring for what it does and its exit codes."""
    args = _arguments(argv)
    try:
        settings, encoder, bank = load(args)
    except SystemExit as exc:
        return int(exc.code)
    refused = start_run(args.output, args.overwrite)
    if refused is not None:
        return refused
    return _run(Job(settings, encoder, bank, args.output))


def _facts(settings: AppSettings, bank) -> dict:
    pacs = settings.pacs
    query = {k: getattr(pacs, k) for k in ("modality", "study_date", "study_description")}
    return {
        "pacs": pacs.peer,
        "aet": pacs.aet,
        "tls": pacs.tls,
        "query": query | {"body_part": pacs.body_part},
        "retrieve": f"C-MOVE to port {pacs.move_port}" if pacs.move_port else "C-GET",
        "reference": f"bank {bank.root} ({len(bank.volumes)} volumes)" if bank else "batch",
    }


def _run(job: Job) -> int:
    settings, pacs = job.settings, job.settings.pacs
    facts = _facts(settings, job.bank)
    LOG.info(
        "cs3f %s, encoder %s: asking %s for %s studies (%s)",
        __version__,
        job.encoder.name,
        pacs.peer,
        pacs.modality,
        facts["retrieve"],
    )
    try:
        studies = _query(pacs)
        done = job.in_pacs(studies)
        for uid in sorted(done):
            job.note(uid, "in the PACS")
        LOG.info("%d studies match; %d already have their results there", len(studies), len(done))
        todo = [uid for uid in studies if uid not in done]
        fetch = todo if job.bank else studies  # a batch needs the others as references
        if todo and job.bank is None and len(fetch) < MIN_STUDIES:
            job.error = (
                f"one study to screen and no other to compare it with; a batch needs at least "
                f"{MIN_STUDIES} studies: screen it against a reference bank (--bank)"
            )
        elif todo:
            _retrieve_and_screen(job, fetch, todo, done)
        if job.error:  # the batch as a whole could not be screened
            for uid in todo:
                if not job.outcome(uid).status:
                    job.note(uid, "failed", f"not screened: {job.error}")
    except PacsError as exc:  # the PACS or our C-MOVE port, before anything was exchanged
        LOG.error("%s", exc)
        job.error = str(exc)
        job.write_summary(**facts)
        return UNREACHABLE
    job.write_summary(**facts)
    if job.error:
        LOG.error("%s", job.error)
        return 1
    return SOME_FAILED if job.failed() else 0
