"""Tokens of the batch -> cross-subject scores, then the batch-calibrated voxel threshold."""

from __future__ import annotations

import logging

import numpy as np

from cs3f.maps import patient_score
from cs3f.progress import Progress
from cs3f.threshold import StreamingPercentile
from operators.batch import Batch, Case
from operators.batch_stage import BatchStage

LOG = logging.getLogger("cs3f.app")


class ScoreOperator(BatchStage):
    """Scores every token against the same region of the other studies, fills each study's score
    (max voxel over its regions) and standard-space maps (parked in the work folder), and sets
    ``batch.threshold`` to the ``voxel_percentile`` of all foreground voxel scores.

    Fewer than two scorable studies cannot be compared: ``batch.error`` says so and nothing is
    scored (the app then exits non-zero after writing the table).
    """

    def __init__(self, fragment, *args, voxel_percentile: float, min_batch_warning: int, **kwargs):
        self.voxel_percentile, self.min_batch_warning = voxel_percentile, min_batch_warning
        super().__init__(fragment, *args, **kwargs)

    def compute(self, op_input, op_output, context):
        batch: Batch = op_input.receive("batch")
        cases = batch.active()  # after tokenize, every active case has its batch index
        if len(cases) < 2:
            batch.error = (
                f"{len(cases)} scorable studies: the method compares studies with each "
                "other and needs at least 2"
            )
            for case in batch.active():
                case.row.fail("failed", "batch too small to score")
            op_output.emit(batch, "batch")
            return
        if len(cases) < self.min_batch_warning:
            batch.warnings.append(
                f"only {len(cases)} studies scored; quality drops below about "
                f"{self.min_batch_warning} (the papers' batches hold 30 or more)"
            )
        stages: dict[str, Progress] = {}

        def progress(stage: str, done: int, total: int) -> None:
            stages.setdefault(stage, Progress(LOG, stage, total)).update(done, total)

        for name, scorer in batch.scorers.items():
            batch.scores[name] = scorer.score(progress)
            for stage, seconds in batch.scores[name].timings.items():
                key = f"scorer_{stage}"
                batch.timings[key] = batch.timings.get(key, 0.0) + seconds
        token_scores = [
            s for r in batch.scores.values() for v in r.token_scores.values() for s in v
        ]
        low = min(0.0, min(float(s.min()) for s in token_scores))
        high = max(float(s.max()) for s in token_scores)
        histogram = StreamingPercentile(low, high)

        def voxel_maps(case: Case) -> None:
            """Park the case's maps; its voxels join the threshold only once all its maps exist."""
            foreground, peaks = [], []
            for region in case.regions:
                mask = np.asarray(region.mask)
                voxel_map = batch.scores[region.region].voxel_map(case.indices[region.region], mask)
                case.score_maps[region.region] = batch.park(
                    f"{case.tag}_{region.slug}_map", voxel_map
                )
                foreground.append(voxel_map[mask])
                peaks.append(patient_score(voxel_map))
            for values in foreground:
                histogram.add(values)
            case.row.score = max(peaks)

        batch.each("voxel maps", voxel_maps)
        if histogram.total == 0:
            batch.error = "no study's voxel map could be made (see the failed rows)"
            op_output.emit(batch, "batch")
            return
        batch.threshold = histogram.percentile(self.voxel_percentile)
        LOG.info(
            "scored %d studies; voxel threshold %.4g (%g-th percentile of %d voxels)",
            len(cases),
            batch.threshold,
            self.voxel_percentile,
            histogram.total,
        )
        op_output.emit(batch, "batch")
