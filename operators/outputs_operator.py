"""Screened -> Written: per scored study, the map back on the source grid, the binary SEG and a
report figure.

Writes ``maps/<key>.nii.gz`` (continuous scores on the source series' grid) and, for DICOM
input, ``maps/<key>.dcm`` (the same scores as a DICOM Parametric Map) and ``seg/<key>.dcm`` (a
DICOM Segmentation), both referencing the source series; for NIfTI input ``seg/<key>.nii.gz``.
A study's files are all written or none is. ``key`` is the StudyInstanceUID, or
its collision-free stand-in (:func:`cs3f.io.outputs.study_keys`). The row's ``details`` get
``seg_voxels`` and ``source_map_max``: the map on the source grid is the standard-space map
interpolated (linearly) back, so its maximum is at most the patient score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cs3f.io.dicom_pmap import score_map
from cs3f.io.dicom_seg import anomaly_segmentation, save
from cs3f.io.nifti_io import save_nifti
from cs3f.io.report import figure_threshold, study_figure
from operators.stage import Stage
from operators.stages import ScoredStudy, Screened, Written


class OutputsOperator(Stage):
    receives, emits = "screened", "written"

    def __init__(
        self, fragment, *args, output_folder: Path, encoder_name: str, report_studies: int, **kwargs
    ):
        self.output_folder, self.encoder_name = Path(output_folder), encoder_name
        self.report_studies = report_studies
        super().__init__(fragment, *args, **kwargs)

    def run(self, screened: Screened) -> Written:
        ledger, calibration, figures = screened.ledger, screened.calibration, {}
        if calibration is None:
            return Written(ledger, None, figures)
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
                seg_path = self.output_folder / "seg" / f"{row.key}.dcm"
                dicom[seg_path] = anomaly_segmentation(
                    source.slices, mask, self.encoder_name, threshold
                )
                dicom[map_path.with_name(f"{row.key}.dcm")] = score_map(
                    source.slices, source_map, self.encoder_name, threshold
                )
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
