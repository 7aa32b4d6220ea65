"""``python -m app -i IN -o OUT [-m MODELS] [--encoder NAME] [--task ...] [--config FILE]``

The successor of ``monai-deploy exec`` (removed in SDK 0.6). HOLOSCAN_INPUT_PATH,
HOLOSCAN_OUTPUT_PATH and HOLOSCAN_MODEL_PATH give the folders when the flags are absent.
Exit codes: 0 done, 1 the batch could not be scored (see scores.json), 2 bad arguments or
settings, encoder weights missing, or an output folder that holds earlier results (give
--overwrite) or files this program did not write.
"""

from __future__ import annotations

import argparse
import ctypes.util
import logging
import os
import resource
import shutil
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

from app.settings import TASKS, SettingsError, load_settings, with_lung_weights
from cs3f import __version__
from cs3f.encoders import ENCODERS, EncoderError, load_encoder
from cs3f.io.nifti_io import InputError, input_format
from cs3f.io.run_folder import OutputFolderError, make_work, prepare_output, watch_work
from cs3f.preprocess.lung_model import LungModelError, load_lung_model
from cs3f.redaction import IDENTIFIERS

LOG = logging.getLogger("cs3f.app")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    env = os.environ.get
    parser.add_argument(
        "-i",
        "--input",
        type=Path,
        default=env("HOLOSCAN_INPUT_PATH"),
        help="folder of DICOM studies (any nesting) or of NIfTI volumes",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=env("HOLOSCAN_OUTPUT_PATH"),
        help="output folder (created; never inside the input)",
    )
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


def _check_folders(source: Path, target: Path) -> str | None:
    source, target = source.resolve(), target.resolve()
    if not source.is_dir():
        return f"input folder {source} does not exist"
    if target == source or source in target.parents or target in source.parents:
        return "the output folder must be outside the input folder (and not contain it)"
    return None


def _logging(output: Path) -> None:
    """Progress and warnings to stderr and run.log; a failed study's (redacted) traceback to
    run.log only. Every record, the libraries' warnings included, passes the identifier filter
    (:mod:`cs3f.redaction`) on its way to either."""
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
    for handler, level in (
        (logging.StreamHandler(sys.stderr), logging.INFO),
        (logging.FileHandler(output / "run.log", "w"), logging.DEBUG),
    ):
        handler.setFormatter(fmt)
        handler.setLevel(level)
        handler.addFilter(IDENTIFIERS)
        handler.cs3f_run = True
        root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    problem = _check_folders(args.input, args.output)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        kind = input_format(args.input)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(
            args.config,
            args.overrides,
            encoder=args.encoder,
            task=args.task,
            save_preprocessed=args.save_preprocessed,
            show_identifiers=args.show_identifiers,
        )
        settings = with_lung_weights(settings, args.model)
        settings.rules_json()
        if settings.task == "lung-ct" and settings.preprocess.lung_model:
            load_lung_model(settings.preprocess.lung_model)  # a bad file stops the run here
    except (SettingsError, LungModelError, OSError) as exc:
        print(f"error: settings: {exc}", file=sys.stderr)
        return 2
    try:
        encoder = load_encoder(
            settings.encoder,
            args.model,
            device=settings.scoring.device,
            batch_size=settings.encoder_batch,
        )
    except EncoderError as exc:
        print(
            f"error: encoder {settings.encoder}: {exc}\nGive the model folder with -m "
            f"(or HOLOSCAN_MODEL_PATH), or run the weight-free encoder with "
            f"--encoder histogram.",
            file=sys.stderr,
        )
        return 2
    try:
        prepare_output(args.output, args.overwrite)
    except OutputFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    IDENTIFIERS.clear()
    _logging(args.output)
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
    LOG.info(
        "cs3f %s, encoder %s, task %s, %s input",
        __version__,
        encoder.name,
        settings.task,
        kind,
    )
    from app.app import ScreeningApp

    work = make_work(args.output)
    watcher = watch_work(work)  # removes the work folder however this process ends
    try:
        application = ScreeningApp(args.input, args.output, work, kind, settings, encoder, run)
        application.run()
    finally:
        shutil.rmtree(work, ignore_errors=True)  # patient images never outlive the run
        os.close(watcher)
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
