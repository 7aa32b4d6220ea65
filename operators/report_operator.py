"""The batch's tables and page: scores.csv, scores.json and report.html (always written)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from monai.deploy.core import Operator, OperatorSpec

from cs3f.outputs import rank, scores_csv, scores_json, write_text
from cs3f.report import report_html
from operators.batch import Batch

LOG = logging.getLogger("cs3f.app")


class ReportOperator(Operator):
    """Ranks the rows and writes the three files; ``run`` (app version, encoder, settings) goes
    into scores.json. Removes the work folder at the end."""

    def __init__(self, fragment, *args, output_folder: Path, run: dict, flag_mad: float, **kwargs):
        self.output_folder, self.run, self.flag_mad = Path(output_folder), run, flag_mad
        self.result: Batch | None = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("batch")

    def compute(self, op_input, op_output, context):
        batch: Batch = op_input.receive("batch")
        rows = rank([c.row for c in batch.cases], self.flag_mad)
        counts = {s: sum(r.status == s for r in rows) for s in ("scored", "skipped", "failed")}
        run = {
            **self.run,
            "input_format": batch.input_format,
            "n_studies": len(rows),
            "n_scored": counts["scored"],
            "n_skipped": counts["skipped"],
            "n_failed": counts["failed"],
            "batch_size": counts["scored"],
            "files": batch.intake,
            "voxel_threshold": batch.threshold,
            "timings_s": {k: round(v, 3) for k, v in batch.timings.items()},
            "warnings": batch.warnings,
            "error": batch.error,
        }
        write_text(self.output_folder / "scores.csv", scores_csv(rows))
        write_text(self.output_folder / "scores.json", scores_json(rows, run))
        write_text(self.output_folder / "report.html", report_html(rows, batch.figures, run))
        for warning in batch.warnings:
            LOG.warning(warning)
        LOG.info(
            "studies: %d scored, %d skipped, %d failed; outputs in the output folder",
            counts["scored"],
            counts["skipped"],
            counts["failed"],
        )
        shutil.rmtree(batch.work, ignore_errors=True)
        self.result = batch
