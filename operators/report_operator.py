"""Written -> the batch's tables and page: scores.csv, scores.json and report.html (always)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from cs3f.io.outputs import rank, scores_csv, scores_json, write_text
from cs3f.io.report import report_html
from operators.stage import Stage
from operators.stages import Written

LOG = logging.getLogger("cs3f.app")


class ReportOperator(Stage):
    """Ranks the rows (decisions from the batch's calibration) and writes the three files;
    ``run`` (app version, encoder, settings) goes into scores.json. Patient ID, name and
    accession number go into the three files only with ``show_identifiers``. Keeps what it
    received as ``result`` for the entry point."""

    receives = "written"

    def __init__(
        self, fragment, *args, output_folder: Path, run: dict, show_identifiers: bool, **kwargs
    ):
        self.output_folder, self.run_info = Path(output_folder), run
        self.show_identifiers = show_identifiers
        self.result: Written | None = None
        super().__init__(fragment, *args, **kwargs)

    def run(self, written: Written) -> None:
        ledger, calibration = written.ledger, written.calibration
        rows = rank(ledger.rows, calibration)
        flag = calibration.flag_threshold if calibration else math.inf
        counts = {s: sum(r.status == s for r in rows) for s in ("scored", "skipped", "failed")}
        run = {
            **self.run_info,
            "input_format": ledger.input_format,
            "n_studies": len(rows),
            "n_scored": counts["scored"],
            "n_skipped": counts["skipped"],
            "n_failed": counts["failed"],
            "batch_size": counts["scored"],
            "files": ledger.intake,
            "voxel_threshold": calibration.voxel_threshold if calibration else None,
            "flag_threshold": flag if calibration and math.isfinite(flag) else None,
            "timings_s": {k: round(v, 3) for k, v in ledger.timings.items()},
            "warnings": ledger.warnings,
            "error": ledger.error,
        }
        shown = self.show_identifiers
        write_text(self.output_folder / "scores.csv", scores_csv(rows, shown))
        write_text(self.output_folder / "scores.json", scores_json(rows, run, shown))
        page = report_html(rows, written.figures, run, shown)
        write_text(self.output_folder / "report.html", page)
        for warning in ledger.warnings:
            LOG.warning(warning)
        LOG.info(
            "studies: %d scored, %d skipped, %d failed; outputs in the output folder",
            counts["scored"],
            counts["skipped"],
            counts["failed"],
        )
        self.result = written
