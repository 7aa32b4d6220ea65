"""``python -m app -i IN -o OUT [-m MODELS] [--encoder NAME] [--task ...] [--config FILE]
[--bank BANK]``, and the reference-bank commands::

    python -m app bank build -i DIR --bank BANK [settings flags]   # a folder of studies -> a new bank
    python -m app bank add -i DIR --bank BANK [settings flags]     # more studies into a bank
    python -m app bank remove --bank BANK --volume ID              # a study later found abnormal
    python -m app bank describe --bank BANK
    python -m app bank index --bank BANK                           # (re)train its IVF index

and, next to a PACS (app/pacs_commands.py, app/listen_command.py)::

    python -m app pacs --pacs HOST:PORT --called-aet AET --aet OURS -o OUT [--bank BANK] ...
    python -m app listen --port PORT --aet OURS --pacs HOST:PORT --called-aet AET -o OUT ...

The successor of ``monai-deploy exec`` (removed in SDK 0.6). HOLOSCAN_INPUT_PATH,
HOLOSCAN_OUTPUT_PATH and HOLOSCAN_MODEL_PATH give the folders when the flags are absent.
Exit codes: 0 done, 1 the batch could not be scored (see scores.json) or the bank not written,
2 bad arguments or settings, encoder weights missing, an output folder that holds earlier
results (give --overwrite) or files this program did not write, or a bank that cannot be used
(missing, unreadable, cut short, too small, or built with another encoder or settings: named).
"""

from __future__ import annotations

import argparse
import ctypes.util
import logging
import os
import resource
import sys
from pathlib import Path

STACK_BYTES = 32 * 1024 * 1024  # the Holoscan SDK's recommended minimum


def _quiet_runtime() -> None:
    """Prepare the process before Holoscan loads, so that a CPU machine starts without alarms.

    The main thread, where the scheduler runs the operators, may grow its stack to 32 MB
    (Holoscan warns, and may crash, below that; a limit the hard limit forbids is left as it
    is, and Holoscan's warning then stands). Holoscan logs warnings and errors, or errors only
    where no CUDA driver is found: there its warnings only say that CUDA is missing. An
    HOLOSCAN_LOG_LEVEL already set wins.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    allowed = hard == resource.RLIM_INFINITY or hard >= STACK_BYTES
    if soft != resource.RLIM_INFINITY and soft < STACK_BYTES and allowed:
        resource.setrlimit(resource.RLIMIT_STACK, (STACK_BYTES, hard))
    has_driver = ctypes.util.find_library("cuda") is not None
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN" if has_driver else "ERROR")


_quiet_runtime()

from app.bank_commands import bank_main
from app.listen_command import listen_main
from app.pacs_commands import pacs_main
from app.run import (
    check_folders,
    error,
    input_flag,
    open_bank,
    run_app,
    run_info,
    settings_and_encoder,
    settings_flags,
    start_run,
)
from cs3f import __version__
from cs3f.bank_search import bank_search
from cs3f.io.nifti_io import InputError, input_format

LOG = logging.getLogger("cs3f.app")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    input_flag(parser)
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=os.environ.get("HOLOSCAN_OUTPUT_PATH"),
        help="output folder (created; never inside the input)",
    )
    settings_flags(parser)
    parser.add_argument(
        "--bank",
        type=Path,
        help="screen each study against this reference bank (see python -m app bank) instead "
        "of against the other studies; one study is then enough",
    )
    parser.add_argument(
        "--save-preprocessed",
        action="store_true",
        default=None,
        help="also write OUT/preprocessed/<study>.nii.gz and _mask.nii.gz",
    )
    parser.add_argument(
        "--show-identifiers",
        action="store_true",
        default=None,
        help="put patient ID, name and accession number into scores and report (default: "
        "pseudonym and study date only)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run in the output folder (refused without it)",
    )
    args = parser.parse_args(argv)
    if args.input is None or args.output is None:
        parser.error("give -i and -o (or HOLOSCAN_INPUT_PATH and HOLOSCAN_OUTPUT_PATH)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"bank": bank_main, "pacs": pacs_main, "listen": listen_main}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    args = _arguments(argv)
    problem = check_folders(args.input, args.output)
    if problem:
        return error(problem)
    try:
        kind = input_format(args.input)
    except InputError as exc:
        return error(str(exc))
    try:
        settings, encoder = settings_and_encoder(
            args, save_preprocessed=args.save_preprocessed, show_identifiers=args.show_identifiers
        )
        bank = open_bank(args.bank, settings, encoder) if args.bank else None
    except SystemExit as exc:
        return int(exc.code)
    refused = start_run(args.output, args.overwrite)
    if refused is not None:
        return refused
    against = ""
    if bank:
        search = bank_search(bank, settings.scoring)
        against = f", against a bank of {len(bank.volumes)} volumes ({search} search)"
    LOG.info(
        "cs3f %s, encoder %s, task %s, %s input%s",
        __version__,
        encoder.name,
        settings.task,
        kind,
        against,
    )
    application = run_app(
        args.input,
        args.output,
        args.output,
        kind,
        settings=settings,
        encoder=encoder,
        run=run_info(settings, encoder, bank),
        bank=bank,
    )
    written = application.report.result if application.report else None
    if written is None:
        LOG.error("the run stopped before writing its results")
        return 1
    if written.ledger.error:
        LOG.error(written.ledger.error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
