"""Screened -> a reference bank on disk: ``bank build`` writes a new one from the batch, ``bank
add`` adds the batch's studies to one (the statistics are the whole new bank's, leave-one-out)."""

from __future__ import annotations

import logging
from pathlib import Path

from cs3f.bank import BankError, ReferenceBank
from cs3f.bank_search import index_bank
from operators.stage import Stage
from operators.stages import Screened

LOG = logging.getLogger("cs3f.app")


class BankOperator(Stage):
    """Writes the scored studies (by pseudonym and study date) and the batch's calibration into
    a new bank at ``path`` (``identity`` is stored with them), or adds them to ``bank``, then
    the bank's approximate index (:func:`cs3f.bank_search.index_bank`, variant C banks). Keeps
    the written bank as ``result`` (``None`` when the batch could not be scored or the bank not
    written; ``error`` says why) for the entry point."""

    receives = "screened"

    def __init__(
        self,
        fragment,
        *args,
        path: Path,
        identity: dict,
        bank: ReferenceBank | None = None,
        **kwargs,
    ):
        self.path, self.identity, self.bank = Path(path), identity, bank
        self.result: ReferenceBank | None = None
        self.error = ""
        super().__init__(fragment, *args, **kwargs)

    def run(self, screened: Screened) -> None:
        ledger = screened.ledger
        failed = [r for r in ledger.rows if r.status != "scored"]
        for row in failed:
            LOG.warning("study %s left out of the bank: %s", row.pseudonym, row.reason)
        if screened.calibration is None:
            self.error = ledger.error or "the batch could not be scored"
            return
        studies = screened.studies
        volumes = screened.screening.bank_volumes(
            [s.index for s in studies],
            [s.row.pseudonym for s in studies],
            [s.row.study_date for s in studies],
        )
        calibration = screened.calibration.as_dict()
        try:
            if self.bank is None:
                written = ReferenceBank.create(self.path, self.identity, volumes, calibration)
            else:
                written = self.bank.add(volumes, calibration)
        except BankError as exc:
            self.error = str(exc)
            return
        self.result = index_bank(written)
        LOG.info(
            "bank %s: %d volumes (%d new); voxel threshold %.4g",
            self.path,
            len(self.result.volumes),
            len(volumes),
            screened.calibration.voxel_threshold,
        )
