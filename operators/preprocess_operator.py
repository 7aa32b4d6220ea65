"""SourceVolumes -> StandardVolumes: each study's standard-space regions (cs3f.preprocess),
keeping the way back with each."""

from __future__ import annotations

from pathlib import Path

from cs3f.io.nifti_io import save_nifti
from cs3f.preprocess import preprocess
from cs3f.preprocess.standard_space import PreprocessSettings
from cs3f.screening import ScreeningError, check_batch_size
from operators.stage import Stage
from operators.stages import SourceStudy, SourceVolumes, StandardStudy, StandardVolumes


class PreprocessOperator(Stage):
    """With ``save_to``, also writes ``<key>.nii.gz`` and ``<key>_mask.nii.gz`` per study
    (``<key>_<region>...`` when a study has several regions, as lungs do)."""

    receives, emits = "sources", "standard"

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

    def run(self, sources: SourceVolumes) -> StandardVolumes:
        ledger = sources.ledger
        try:
            check_batch_size(len(sources.studies))
        except ScreeningError as exc:
            ledger.refuse(str(exc), [s.row for s in sources.studies], "batch too small to score")
            return StandardVolumes(ledger, [])

        def prepare(study: SourceStudy) -> StandardStudy:
            row = study.row
            regions = preprocess(study.source, self.task, self.settings)
            for region in regions:
                region.volume = ledger.park(row, f"{region.slug}_standard", region.volume)
                region.mask = ledger.park(row, f"{region.slug}_mask", region.mask)
                if self.save_to is not None:
                    stem = row.key if len(regions) == 1 else f"{row.key}_{region.slug}"
                    save_nifti(region.volume, region.affine, self.save_to / f"{stem}.nii.gz")
                    save_nifti(
                        region.mask.astype("uint8"),
                        region.affine,
                        self.save_to / f"{stem}_mask.nii.gz",
                    )
            row.details["preprocessing"] = {r.region: r.details for r in regions}
            return StandardStudy(study, regions)

        studies = ledger.each("preprocess", sources.studies, lambda s: s.row, prepare)
        return StandardVolumes(ledger, studies)
