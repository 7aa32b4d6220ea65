"""What the app's commands share: the settings flags, settings and encoder loading, opening a
reference bank, logging, and running the graph in a work folder that never outlives the run.
Errors the user can fix are said on stderr and end the command with exit code 2
(``SystemExit(2)``, see :func:`error`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from app.settings import TASKS, AppSettings, SettingsError, load_settings, with_lung_weights
from cs3f import __version__
from cs3f.bank import BankError, ReferenceBank
from cs3f.bank_search import search_record
from cs3f.encoders import ENCODERS, EncoderError, SliceEncoder, load_encoder
from cs3f.io.run_folder import OutputFolderError, prepare_output, work_folder
from cs3f.preprocess.lung_model import LungModelError, load_lung_model
from cs3f.redaction import IDENTIFIERS

LOG = logging.getLogger("cs3f.app")


def input_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--input",
        type=Path,
        default=os.environ.get("HOLOSCAN_INPUT_PATH"),
        help="folder of DICOM studies (any nesting) or of NIfTI volumes",
    )


def settings_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the encoder and the settings (the main run and bank build, add)."""
    env = os.environ.get
    parser.add_argument(
        "-m",
        "--model",
        type=Path,
        default=env("HOLOSCAN_MODEL_PATH"),
        help="model folder: the DINOv2 or DINOv3 checkpoint (HF format); lung CT: lungmask/*.pth "
        "optional",
    )
    parser.add_argument(
        "--encoder",
        choices=ENCODERS,
        help="default: dinov2 (weights from -m); histogram is the weight-free encoder that "
        "detects, pixels the raw-intensity ablation",
    )
    parser.add_argument("--task", choices=TASKS, help="default: brain-mri")
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one setting (repeatable)",
    )


def check_folders(source: Path, target: Path) -> str | None:
    source, target = source.resolve(), target.resolve()
    if not source.is_dir():
        return f"input folder {source} does not exist"
    if target == source or source in target.parents or target in source.parents:
        return "the output folder must be outside the input folder (and not contain it)"
    return None


def start_logging(output: Path | None) -> None:
    """Progress and warnings to stderr and, given an output folder, run.log (a failed study's
    redacted traceback goes to run.log only). Every record, the libraries' warnings included,
    passes the identifier filter (:mod:`cs3f.redaction`) on its way to either."""
    root = logging.getLogger()
    root.setLevel(logging.WARNING)  # other libraries: warnings and errors only
    LOG.setLevel(logging.DEBUG)
    logging.captureWarnings(False)  # reset: an earlier run in this process may have set it
    logging.captureWarnings(True)  # warnings.warn(...) of pydicom, highdicom: through the filter
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for handler in list(root.handlers):
        if getattr(handler, "cs3f_run", False):
            root.removeHandler(handler)
            handler.close()
    handlers = [(logging.StreamHandler(sys.stderr), logging.INFO)]
    if output is not None:
        handlers.append((logging.FileHandler(output / "run.log", "w"), logging.DEBUG))
    for handler, level in handlers:
        handler.setFormatter(fmt)
        handler.setLevel(level)
        handler.addFilter(IDENTIFIERS)
        handler.cs3f_run = True
        root.addHandler(handler)


def error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def start_run(output: Path, overwrite: bool) -> int | None:
    """Make ``output`` ready for a run's results (:func:`cs3f.io.run_folder.prepare_output`)
    and log into it, with an empty identifier registry. Returns None, or exit code 2 (said
    on stderr) when the folder cannot be used."""
    try:
        prepare_output(output, overwrite)
    except OutputFolderError as exc:
        return error(str(exc))
    IDENTIFIERS.clear()
    start_logging(output)
    return None


def settings_and_encoder(args: argparse.Namespace, **cli) -> tuple[AppSettings, SliceEncoder]:
    """The run's settings and encoder from the settings flags.

    Raises:
        SystemExit(2): bad settings or missing encoder weights, said on stderr.
    """
    try:
        settings = load_settings(
            args.config,
            args.overrides,
            encoder=args.encoder,
            task=args.task,
            **cli,
        )
        settings = with_lung_weights(settings, args.model)
        settings.rules_json()
        if settings.task == "lung-ct" and settings.preprocess.lung_model:
            load_lung_model(settings.preprocess.lung_model)  # a bad file stops the run here
    except (SettingsError, LungModelError, OSError) as exc:
        raise SystemExit(error(f"settings: {exc}")) from exc
    try:
        encoder = load_encoder(
            settings.encoder,
            args.model,
            device=settings.scoring.device,
            batch_size=settings.encoder_batch,
        )
    except EncoderError as exc:
        raise SystemExit(
            error(
                f"encoder {settings.encoder}: {exc}\nGive the model folder with -m "
                f"(or HOLOSCAN_MODEL_PATH), or run the weight-free encoder with "
                f"--encoder histogram."
            )
        ) from exc
    return settings, encoder


def open_bank(
    path: Path, settings: AppSettings | None, encoder: SliceEncoder | None, *, index: bool = True
) -> ReferenceBank:
    """The bank at ``path``, checked against this run's identity when settings are given, its
    stored index read unless ``index`` is false (:meth:`ReferenceBank.open`).

    Raises:
        SystemExit(2): the bank cannot be used (the reason on stderr).
    """
    try:
        bank = ReferenceBank.open(path, index=index)
        if settings is not None:
            bank.check(settings.identity(encoder))
    except BankError as exc:
        raise SystemExit(error(str(exc))) from exc
    return bank


def run_app(input_folder: Path, output: Path, work_parent: Path, kind: str, **graph):
    """Run the graph with a work folder under ``work_parent`` that never outlives the run."""
    from app.app import ScreeningApp

    with work_folder(work_parent) as work:
        application = ScreeningApp(input_folder, output, work, kind, **graph)
        application.run()
    return application


def run_info(settings: AppSettings, encoder: SliceEncoder, bank: ReferenceBank | None) -> dict:
    run = {
        "app": "cs3f-screening",
        "app_version": __version__,
        "encoder": {
            "name": encoder.name,
            "weights_sha256": encoder.weights_sha256,
            "device": str(encoder.device),
        },
        "settings": settings.as_dict(),
    }
    if bank is not None:
        run["reference"] = {"bank": str(bank.root), "volumes": len(bank.volumes)} | search_record(
            bank, settings.scoring
        )
    return run
