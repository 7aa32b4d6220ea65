"""Native volume -> standard space (cs3f.standardise), keeping the way back with each study."""

from __future__ import annotations

from pathlib import Path

from cs3f.nifti_io import save_nifti
from cs3f.standardise import StandardiseSettings, standardise
from operators.batch import Batch, Case
from operators.batch_stage import BatchStage


class PreprocessOperator(BatchStage):
    def __init__(
        self, fragment, *args, settings: StandardiseSettings, save_to: Path | None, **kwargs
    ):
        self.settings, self.save_to = settings, save_to
        super().__init__(fragment, *args, **kwargs)

    def compute(self, op_input, op_output, context):
        batch: Batch = op_input.receive("batch")

        def prepare(case: Case) -> None:
            result = standardise(case.source, self.settings)
            result.volume = batch.park(f"{case.tag}_standard", result.volume)
            result.mask = batch.park(f"{case.tag}_mask", result.mask)
            case.standard = result
            case.row.details["preprocessing"] = result.details
            if self.save_to is not None:
                affine = result.transform.target_affine
                save_nifti(result.volume, affine, self.save_to / f"{case.row.key}.nii.gz")
                save_nifti(
                    result.mask.astype("uint8"),
                    affine,
                    self.save_to / f"{case.row.key}_mask.nii.gz",
                )

        batch.each("preprocess", prepare)
        op_output.emit(batch, "batch")
