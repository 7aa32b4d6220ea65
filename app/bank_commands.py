"""``python -m app bank build|add|remove|describe|index``: a reference bank's commands (see
:mod:`cs3f.bank`); exit codes as for the main run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from app.run import (
    check_folders,
    error,
    input_flag,
    open_bank,
    run_app,
    run_info,
    settings_and_encoder,
    settings_flags,
    start_logging,
)
from cs3f.bank import BankError
from cs3f.bank_search import index_bank, indexable
from cs3f.io.nifti_io import InputError, input_format
from cs3f.redaction import IDENTIFIERS
from cs3f.screening import ScreeningError, bank_calibration

LOG = logging.getLogger("cs3f.app")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app bank",
        description="build, extend, prune, describe or index a reference bank",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("build", "screen a folder of studies against each other and keep them as a new bank"),
        ("add", "add a folder of studies to a bank (its statistics are recomputed)"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        input_flag(command)
        command.add_argument("--bank", type=Path, required=True, help="the bank's folder")
        settings_flags(command)
    remove = commands.add_parser("remove", help="drop one volume (a study found abnormal)")
    remove.add_argument("--bank", type=Path, required=True)
    remove.add_argument("--volume", required=True, help="its pseudonymous id (bank describe)")
    describe = commands.add_parser("describe", help="size, encoder, settings, dates, volumes")
    describe.add_argument("--bank", type=Path, required=True)
    index = commands.add_parser(
        "index", help="(re)train the approximate index of a variant C bank (version 1 has none)"
    )
    index.add_argument("--bank", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command in ("build", "add") and args.input is None:
        parser.error("give -i (or HOLOSCAN_INPUT_PATH)")
    return args


def bank_main(argv: list[str]) -> int:
    """``python -m app bank build|add|remove|describe|index``; exit codes as for the main run."""
    args = _arguments(argv)
    try:
        if args.command == "describe":
            print("\n".join(open_bank(args.bank, None, None).describe()))
            return 0
        if args.command == "index":
            bank = open_bank(args.bank, None, None, index=False)  # a damaged index is rebuilt
            if not indexable(bank):
                return error("the bank holds fine tokens (variant MS or F): searched pairwise")
            start_logging(None)
            LOG.info("bank %s: index %s", args.bank, index_bank(bank).index)
            return 0
        if args.command == "remove":
            bank = open_bank(args.bank, None, None)
            start_logging(None)
            try:
                keep = bank.remaining(args.volume)
                index_bank(bank.remove(args.volume, bank_calibration(bank, keep).as_dict()))
            except (BankError, ScreeningError) as exc:
                return error(str(exc))
            LOG.info("removed %s; the bank keeps %d volumes", args.volume, len(keep))
            return 0
        return _bank_build_or_add(args)
    except SystemExit as exc:
        return int(exc.code)


def _bank_build_or_add(args: argparse.Namespace) -> int:
    problem = check_folders(args.input, args.bank)
    if problem:
        return error(problem.replace("output folder", "bank"))
    if args.command == "build" and args.bank.exists():
        return error(f"{args.bank} already exists; a new bank needs a new folder")
    try:
        kind = input_format(args.input)
    except InputError as exc:
        return error(str(exc))
    settings, encoder = settings_and_encoder(args)
    bank = open_bank(args.bank, settings, encoder) if args.command == "add" else None
    IDENTIFIERS.clear()
    start_logging(None)
    args.bank.parent.mkdir(parents=True, exist_ok=True)
    application = run_app(
        args.input,
        args.bank.parent,
        args.bank.parent,
        kind,
        settings=settings,
        encoder=encoder,
        run=run_info(settings, encoder, bank),
        mode=f"bank {args.command}",
        bank=bank,
        bank_path=args.bank,
    )
    writer = application.bank_writer
    if writer is None or writer.result is None:
        LOG.error("no bank written: %s", writer.error if writer else "the run stopped early")
        return 1
    return 0
