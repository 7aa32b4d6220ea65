"""SourceVolumes -> StandardVolumes: each study's standard-space regions (cs3f.preprocess),
keeping the way back with each."""

from __future__ import annotations

from pathlib import Path

from cs3f.io.nifti_io import save_nifti
from cs3f.preprocess.parallel import preprocess_all, usable_cores
from cs3f.preprocess.standard_space import PreprocessSettings
from cs3f.screening import ScreeningError, check_batch_size
from operators.stage import Stage
from operators.stages import SourceStudy, SourceVolumes, StandardStudy, StandardVolumes


class PreprocessOperator(Stage):
    """Studies are preprocessed ``settings.workers`` at a time in worker processes
    (:mod:`cs3f.preprocess.parallel`). With ``save_to``, also writes ``<key>.nii.gz`` and
    ``<key>_mask.nii.gz`` per study (``<key>_<region>...`` when a study has several regions, as
    lungs do). ``against_bank``: the studies will be screened against a reference bank, so one
    study is enough."""

    receives, emits = "sources", "standard"

    def __init__(
        self,
        fragment,
        *args,
        task: str,
        settings: PreprocessSettings,
        save_to: Path | None,
        against_bank: bool = False,
        **kwargs,
    ):
        self.task, self.settings, self.save_to = task, settings, save_to
        self.against_bank = against_bank
        super().__init__(fragment, *args, **kwargs)

    def run(self, sources: SourceVolumes) -> StandardVolumes:
        ledger = sources.ledger
        try:
            check_batch_size(len(sources.studies), self.against_bank)
        except ScreeningError as exc:
            ledger.refuse(str(exc), [s.row for s in sources.studies], "batch too small to score")
            return StandardVolumes(ledger, [])

        workers = self.settings.workers or usable_cores()
        workers = min(workers, len(sources.studies))
        volumes = [s.source for s in sources.studies]
        results = preprocess_all(volumes, self.task, self.settings, workers)

        def prepare(study: SourceStudy) -> StandardStudy:  # called once per study, in order
            row = study.row
            regions = next(results).result()
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

        try:
            studies = ledger.each("preprocess", sources.studies, lambda s: s.row, prepare)
        finally:
            results.close()
        return StandardVolumes(ledger, studies)
