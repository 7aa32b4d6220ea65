"""Per scored study: the map back on the source grid, the binary SEG and a report figure.

Writes ``maps/<key>.nii.gz`` (continuous scores on the source series' grid) and
``seg/<key>.dcm`` (DICOM input; a DICOM Segmentation referencing the source series) or
``seg/<key>.nii.gz`` (NIfTI input). ``key`` is the sanitised StudyInstanceUID.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cs3f.dicom_seg import anomaly_segmentation, save
from cs3f.nifti_io import save_nifti
from cs3f.report import study_figure
from operators.batch import Batch, Case
from operators.batch_stage import BatchStage


class OutputsOperator(BatchStage):
    def __init__(
        self, fragment, *args, output_folder: Path, encoder_name: str, report_studies: int, **kwargs
    ):
        self.output_folder, self.encoder_name = Path(output_folder), encoder_name
        self.report_studies = report_studies
        super().__init__(fragment, *args, **kwargs)

    def compute(self, op_input, op_output, context):
        batch: Batch = op_input.receive("batch")
        if not batch.scores:
            op_output.emit(batch, "batch")
            return
        scores = sorted((c.row.score for c in batch.active()), reverse=True)
        shown_from = scores[min(self.report_studies, len(scores)) - 1] if scores else 0.0
        vmax = scores[0] if scores else 1.0

        def write(case: Case) -> None:
            source_map = np.max(
                [
                    region.transform.to_source(np.asarray(case.score_maps[region.region]))
                    for region in case.regions
                ],
                axis=0,
            )
            mask = source_map > batch.threshold
            affine = case.source.affine
            save_nifti(
                source_map.astype(np.float32),
                affine,
                self.output_folder / "maps" / f"{case.row.key}.nii.gz",
            )
            if batch.input_format == "dicom":
                seg = anomaly_segmentation(case.slices, mask, self.encoder_name, batch.threshold)
                save(seg, self.output_folder / "seg" / f"{case.row.key}.dcm")
            else:
                save_nifti(
                    mask.astype(np.uint8),
                    affine,
                    self.output_folder / "seg" / f"{case.row.key}.nii.gz",
                )
            case.row.details["seg_voxels"] = int(mask.sum())
            if case.row.score >= shown_from:
                batch.figures[case.row.key] = study_figure(case.source, source_map, mask, vmax)

        batch.each("write outputs", write)
        op_output.emit(batch, "batch")
