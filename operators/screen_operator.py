"""StandardVolumes -> Screened: the batch screened by cs3f.screening (tokens, cross-subject
scores, voxel maps, patient scores, the voxel threshold), against itself or a reference bank."""

from __future__ import annotations

import logging

from cs3f.bank import ReferenceBank
from cs3f.decisions import ScreeningRules
from cs3f.encoders import SliceEncoder
from cs3f.method.batch_scorer import ScoringSettings
from cs3f.method.tokens import TokenSettings
from cs3f.progress import Progress
from cs3f.screening import Screening, ScreeningError
from operators.stage import Stage
from operators.stages import ScoredStudy, Screened, StandardStudy, StandardVolumes

LOG = logging.getLogger("cs3f.app")


class ScreenOperator(Stage):
    """Adapts the stage data to :class:`~cs3f.screening.Screening`: studies in, their parked
    maps and the batch's calibration out. When the batch as a whole cannot be screened (too few
    scorable studies, here or already before preprocessing), ``ledger.error`` says why, the
    remaining rows fail and ``calibration`` is ``None`` (the app then exits non-zero after
    writing the table).

    ``bank``: screen against this reference bank instead of the batch. ``stored``: a bank whose
    volumes join the batch (``bank add``: the new studies and the bank's are scored leave-one-out
    together, for the bank's new statistics); they are recorded, not emitted."""

    receives, emits = "standard", "screened"

    def __init__(
        self,
        fragment,
        *args,
        encoder: SliceEncoder,
        tokens: TokenSettings,
        scoring: ScoringSettings,
        rules: ScreeningRules,
        bank: ReferenceBank | None = None,
        stored: ReferenceBank | None = None,
        **kwargs,
    ):
        self.encoder, self.tokens, self.scoring, self.rules = encoder, tokens, scoring, rules
        self.bank, self.stored = bank, stored
        super().__init__(fragment, *args, **kwargs)

    def run(self, standard: StandardVolumes) -> Screened:
        ledger = standard.ledger
        if ledger.error:  # refused upstream (too few studies to be worth preprocessing)
            return Screened(ledger, [], None, None)
        screening = Screening(
            self.encoder, self.tokens, self.scoring, self.rules, ledger.work, self.bank
        )
        added = ledger.each(
            "tokenize",
            standard.studies,
            lambda s: s.row,
            lambda s: (s, screening.add(s.regions)),
        )
        stored = [screening.add_stored(v) for v in self._stored_volumes()]
        stages: dict[str, Progress] = {}

        def progress(stage: str, done: int, total: int) -> None:
            stages.setdefault(stage, Progress(LOG, stage, total)).update(done, total)

        try:
            screening.score(progress)
        except ScreeningError as exc:
            ledger.refuse(str(exc), [s.row for s in standard.studies], "batch too small to score")
            return Screened(ledger, [], screening, None)
        ledger.warnings.extend(screening.warnings)
        for stage, seconds in screening.timings.items():
            ledger.timings[stage] = ledger.timings.get(stage, 0.0) + seconds

        def voxel_maps(item: tuple[StandardStudy, int]) -> ScoredStudy:
            study, index = item
            maps = {
                name: ledger.park(study.row, f"{name.replace(' ', '_')}_map", voxel_map)
                for name, voxel_map in screening.voxel_maps(index).items()
            }
            study.row.score = screening.record(index, maps)
            return ScoredStudy(study, index, maps)

        scored = ledger.each("voxel maps", added, lambda item: item[0].row, voxel_maps)
        for index in stored:
            screening.record(index, screening.voxel_maps(index))
        try:
            calibration = screening.calibrate()
        except ScreeningError as exc:
            ledger.refuse(str(exc))
            return Screened(ledger, [], screening, None)
        return Screened(ledger, scored, screening, calibration)

    def _stored_volumes(self):
        """The stored bank's volumes, read back as :class:`~cs3f.bank.NewVolume` s."""
        if self.stored is None:
            return []
        return [self.stored.volume(v.id) for v in self.stored.volumes]
