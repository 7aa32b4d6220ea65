"""Native volume -> standard-space regions (cs3f.preprocess), keeping the way back with each."""

from __future__ import annotations

from pathlib import Path

from cs3f.nifti_io import save_nifti
from cs3f.preprocess import preprocess
from cs3f.standard_space import PreprocessSettings
from operators.batch import Batch, Case
from operators.batch_stage import BatchStage


class PreprocessOperator(BatchStage):
    """Fills ``case.regions``; with ``save_to``, writes ``<key>.nii.gz`` and ``<key>_mask.nii.gz``
    per study (``<key>_<region>...`` when a study has several regions, as lungs do)."""

    def __init__(
        self,
        fragment,
        *args,
        task: str,
        settings: PreprocessSettings,
        save_to: Path | None,
        **kwargs,
    ):
        self.task, self.settings, self.save_to = task, settings, save_to
        super().__init__(fragment, *args, **kwargs)

    def compute(self, op_input, op_output, context):
        batch: Batch = op_input.receive("batch")

        def prepare(case: Case) -> None:
            regions = preprocess(case.source, self.task, self.settings)
            for region in regions:
                region.volume = batch.park(f"{case.tag}_{region.slug}_standard", region.volume)
                region.mask = batch.park(f"{case.tag}_{region.slug}_mask", region.mask)
                if self.save_to is not None:
                    stem = case.row.key if len(regions) == 1 else f"{case.row.key}_{region.slug}"
                    save_nifti(region.volume, region.affine, self.save_to / f"{stem}.nii.gz")
                    save_nifti(
                        region.mask.astype("uint8"),
                        region.affine,
                        self.save_to / f"{stem}_mask.nii.gz",
                    )
            case.regions = regions
            case.row.details["preprocessing"] = {r.region: r.details for r in regions}

        batch.each("preprocess", prepare)
        op_output.emit(batch, "batch")
