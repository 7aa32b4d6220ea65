"""Screened -> Written: per scored study, the map back on the source grid, the binary SEG, the
result as a structured report and a report figure.

Writes ``maps/<key>.nii.gz`` (continuous scores on the source series' grid) and, for DICOM
input, ``maps/<key>.dcm`` (the same scores as a DICOM Parametric Map), ``seg/<key>.dcm`` (a
DICOM Segmentation), both referencing the source series, and ``sr/<key>.dcm`` (the score,
percentile and flag as a DICOM Comprehensive SR referencing the SEG); for NIfTI input
``seg/<key>.nii.gz``. The DICOM objects' UIDs derive from the study, its series screened and
``results_seed`` (:mod:`cs3f.io.result_uids`), or are new ones without a seed. A study's files
are all written or none is. ``key`` is the StudyInstanceUID, or its collision-free stand-in
(:func:`cs3f.io.outputs.study_keys`). The row's ``details`` get ``seg_voxels`` and
``source_map_max``: the map on the source grid is the standard-space map interpolated
(linearly) back, so its maximum is at most the patient score. The SR's percentile and flag are
the row's, as ``scores.csv`` shows them (:func:`cs3f.io.outputs.rank` fills them first).
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cs3f.decisions import Calibration
from cs3f.io.dicom_pmap import score_map
from cs3f.io.dicom_seg import anomaly_segmentation, save
from cs3f.io.dicom_sr import StudyResult, screening_report
from cs3f.io.nifti_io import save_nifti
from cs3f.io.outputs import StudyRow, rank
from cs3f.io.report import figure_threshold, study_figure
from cs3f.io.result_uids import RESULTS, DerivedUIDs, result_uids
from cs3f.volume import spacing
from operators.stage import Stage
from operators.stages import ScoredStudy, Screened, SourceStudy, Written


class OutputsOperator(Stage):
    receives, emits = "screened", "written"

    def __init__(
        self,
        fragment,
        *args,
        output_folder: Path,
        encoder_name: str,
        report_studies: int,
        results_seed: str | None,
        reference: str,
        **kwargs,
    ):
        """``reference``: what the studies are compared with, ``"batch"`` or ``"bank"``;
        ``results_seed``: see the module docstring."""
        self.output_folder, self.encoder_name = Path(output_folder), encoder_name
        self.report_studies, self.results_seed = report_studies, results_seed
        self.reference = reference
        super().__init__(fragment, *args, **kwargs)

    def _report(
        self,
        row: StudyRow,
        seg: Dataset,
        source: SourceStudy,
        mask: np.ndarray,
        calibration: Calibration,
        uids: DerivedUIDs | None,
    ) -> hd.sr.ComprehensiveSR:
        """The study's structured report (score, percentile, flag), referencing ``seg``;
        ``mask`` (columns, rows, slices) is the SEG's on the source grid."""
        flag = calibration.flag_threshold
        n = len(calibration.reference_scores)
        things = "volumes" if self.reference == "bank" else "studies"
        result = StudyResult(
            score=row.score,
            percentile=row.batch_percentile,
            flagged=row.flagged,
            flag_threshold=flag if np.isfinite(flag) else None,
            voxel_threshold=calibration.voxel_threshold,
            anomaly_ml=float(mask.sum() * np.prod(spacing(source.source.affine)) / 1000),
            reference=f"{self.reference} of {n} {things}",
            encoder=self.encoder_name,
        )
        return screening_report(seg, source.slices, result, uids)

    def run(self, screened: Screened) -> Written:
        ledger, calibration, figures = screened.ledger, screened.calibration, {}
        if calibration is None:
            return Written(ledger, None, figures)
        rank(ledger.rows, calibration)  # each row's percentile and flag, for its SR
        scores = [s.row.score for s in screened.studies]
        shown_from = figure_threshold(scores, self.report_studies)
        threshold, vmax = calibration.voxel_threshold, max(scores)

        def write(study: ScoredStudy) -> None:
            row, source = study.row, study.standard.source
            source_map = screened.screening.source_map(study.index, study.maps)
            mask = calibration.segment(source_map)
            map_path = self.output_folder / "maps" / f"{row.key}.nii.gz"
            dicom = {}  # path -> object, all built before anything is written
            if ledger.input_format == "dicom":
                uids = (
                    result_uids(
                        self.results_seed, row.study_instance_uid, row.series_instance_uid
                    )
                    if self.results_seed
                    else dict.fromkeys(RESULTS)
                )
                seg_path = self.output_folder / "seg" / f"{row.key}.dcm"
                seg = anomaly_segmentation(
                    source.slices, mask, self.encoder_name, threshold, uids=uids["seg"]
                )
                dicom[seg_path] = seg
                dicom[map_path.with_name(f"{row.key}.dcm")] = score_map(
                    source.slices, source_map, self.encoder_name, threshold, uids=uids["map"]
                )
                sr_path = self.output_folder / "sr" / f"{row.key}.dcm"
                dicom[sr_path] = self._report(row, seg, source, mask, calibration, uids["sr"])
            else:
                seg_path = self.output_folder / "seg" / f"{row.key}.nii.gz"
            figure = (
                study_figure(source.source, source_map, mask, threshold, vmax)
                if row.score >= shown_from
                else None
            )
            try:  # a study's outputs are all there or none is
                save_nifti(source_map.astype(np.float32), source.source.affine, map_path)
                for path, dataset in dicom.items():
                    save(dataset, path)
                if not dicom:
                    save_nifti(mask.astype(np.uint8), source.source.affine, seg_path)
            except BaseException:
                for path in (map_path, seg_path, *dicom):
                    path.unlink(missing_ok=True)
                raise
            row.details["seg_voxels"] = int(mask.sum())
            row.details["source_map_max"] = float(source_map.max())
            if figure:
                figures[row.key] = figure

        ledger.each("write outputs", screened.studies, lambda s: s.row, write)
        return Written(ledger, calibration, figures)
