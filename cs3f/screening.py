"""The screening rules of a batch, end to end on arrays: the one place that decides.

    screening = Screening(encoder, tokens, scoring, rules, work=folder)
    for regions in studies:                      # each: list[Standardised] of one study
        index = screening.add(regions)           # tokenise now; tokens kept in the store
    screening.score()                            # every token against the other studies
    for index in range(screening.n_studies):
        maps = screening.voxel_maps(index)       # region -> standard-space map
        screening.record(index, maps)            # its voxels join the threshold, its score counts
    calibration = screening.calibrate()          # voxel threshold + the flag rule's statistics
    source_map = screening.source_map(index, maps)
    seg = calibration.segment(source_map)
    calibration.flagged(screening.scores[index]), calibration.percentile(...)

What each step means:

- **Token scores per region**: studies are compared region by region (the brain; or the left and
  right lung), each region with its own :class:`~cs3f.method.batch_scorer.BatchScorer`, so a
  token is only ever compared with the same region of the other studies (leave-one-out: never
  with its own study).
- **Voxel maps**: per region, the token scores become a voxel map, fused over layers and axes
  (:class:`~cs3f.method.batch_scorer.BatchScores`); on the source grid a voxel takes the
  largest score of the regions that reach it.
- **Patient score**: the largest voxel score over the study's regions.
- **Voxel threshold**: the ``voxel_percentile`` of all foreground voxel scores of the batch,
  streamed through a fixed histogram (:class:`~cs3f.method.threshold.StreamingPercentile`).
- **Flag**: patient score above median + ``flag_mad`` x 1.4826 x MAD of the batch's scores.

The reference that scores and statistics come from is the batch itself, or a reference bank
(:class:`~cs3f.bank.ReferenceBank`, given as ``bank``) at two seams: ``score`` compares the
added studies with the bank's stored token sets instead of with each other (one study is then
enough), and ``calibrate`` returns the bank's stored :class:`Calibration` (its leave-one-out
statistics) instead of the batch's; the maps, the patient score and the decisions stay as they
are. A batch screening writes a bank's volumes with :meth:`Screening.bank_volumes`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cs3f.bank import NewVolume, ReferenceBank
from cs3f.bank_search import bank_search, token_index
from cs3f.decisions import Calibration, ScreeningRules
from cs3f.encoders import SliceEncoder
from cs3f.method.batch_scorer import BatchScorer, BatchScores, ScoringSettings, StageProgress
from cs3f.method.maps import patient_score
from cs3f.method.store import TokenStore
from cs3f.method.threshold import StreamingPercentile
from cs3f.method.tokens import TokenSettings
from cs3f.preprocess.standard_space import Standardised, region_slug

__all__ = [
    "MIN_STUDIES",
    "Screening",
    "ScreeningError",
    "StoredRegion",
    "bank_calibration",
    "check_batch_size",
    "screening_identity",
    "study_score",
]

LOG = logging.getLogger("cs3f.app")
MIN_STUDIES = 2  # the method compares studies with each other
HOW = ("device", "bank_index")  # scoring settings that change how scores are found, not what


def study_score(maps: dict[str, np.ndarray]) -> float:
    """A study's patient score: the largest voxel score over its regions' maps."""
    return max(patient_score(m) for m in maps.values())


class ScreeningError(ValueError):
    """The batch as a whole cannot be screened (the message says why)."""


def screening_identity(
    encoder: SliceEncoder,
    tokens: TokenSettings,
    scoring: ScoringSettings,
    rules: ScreeningRules,
    preprocess: Mapping | None = None,
) -> dict:
    """What must be the same for scores to compare: the encoder (name, weights SHA-256) and
    every token, scoring, decision and preprocessing setting (not how the search runs: the
    device and the bank search; nor the small-batch warning). A reference bank stores it and
    refuses any other."""
    return {
        "encoder": encoder.name,
        "weights_sha256": encoder.weights_sha256,
        "tokens": dataclasses.asdict(tokens),
        "scoring": {k: v for k, v in dataclasses.asdict(scoring).items() if k not in HOW},
        "rules": {k: v for k, v in dataclasses.asdict(rules).items() if k != "min_batch_warning"},
        "preprocess": dict(preprocess or {}),
    }


def check_batch_size(n_studies: int, against_bank: bool = False) -> None:
    """Refuse a batch of fewer than :data:`MIN_STUDIES` studies (none, against a bank), before
    any expensive work.

    Raises:
        ScreeningError: saying how many there are and why that is too few.
    """
    if against_bank:
        if n_studies < 1:
            raise ScreeningError("no scorable study to screen against the bank")
        return
    if n_studies < MIN_STUDIES:
        raise ScreeningError(
            f"{n_studies} scorable studies: the method compares studies with each other and "
            f"needs at least {MIN_STUDIES}"
        )


@dataclass(frozen=True)
class StoredRegion:
    """A region known only by its stored tokens and mask (see :meth:`Screening.add_stored`)."""

    region: str
    mask: np.ndarray


class Screening:
    """One batch screened against itself, or against a reference bank, region by region.

    Args:
        encoder: the slice encoder (``None`` when every study comes from stored tokens).
        tokens, scoring: the method's settings.
        rules: the decision rules.
        work: folder for the disk-backed token stores (one subfolder per region);
            ``None`` keeps tokens in memory (small batches, tests).
        bank: score against this bank instead of the batch; its identity must be
            :func:`screening_identity` of these settings (checked by the caller, who knows the
            preprocessing settings). It is searched as :func:`cs3f.bank_search.bank_search`
            says (``search``: ``pairwise``, ``flat`` or ``ivf``; ``None`` without a bank).
    """

    def __init__(
        self,
        encoder: SliceEncoder | None,
        tokens: TokenSettings,
        scoring: ScoringSettings,
        rules: ScreeningRules,
        work: Path | None = None,
        bank: ReferenceBank | None = None,
    ) -> None:
        self.encoder, self.tokens, self.scoring, self.rules = encoder, tokens, scoring, rules
        self.work = Path(work) if work is not None else None
        self.bank = bank
        self.search = bank_search(bank, scoring) if bank is not None else None
        self.scorers: dict[str, BatchScorer] = {}
        self.studies: list[dict[str, tuple[int, Standardised | StoredRegion]]] = []
        self.results: dict[str, BatchScores] = {}
        self.scores: dict[int, float] = {}
        self.warnings: list[str] = []
        self.timings: dict[str, float] = {}
        self._voxels: StreamingPercentile | None = None

    @property
    def n_studies(self) -> int:
        return len(self.studies)

    def add(self, regions: Sequence[Standardised]) -> int:
        """Tokenise every region of one study and keep its tokens; returns the study's index.

        All or nothing: when a region cannot be tokenised, no region of the study is kept.

        Raises:
            ValueError: a region's mask is empty or leaves an axis with no token above delta.
        """
        if self.results:
            raise RuntimeError("studies cannot be added after scoring")
        tokenised = []
        for region in regions:
            scorer = self._scorer(region)
            tokenised.append((region, scorer, scorer.tokenize(region.volume, region.mask)))
        study = {
            region.region: (scorer.add_tokens(sets, region.volume.shape), region)
            for region, scorer, sets in tokenised
        }
        self.studies.append(study)
        return len(self.studies) - 1

    def _scorer(self, region: Standardised) -> BatchScorer:
        return self._scorer_named(region.region)

    def _scorer_named(self, name: str) -> BatchScorer:
        if name not in self.scorers:
            store = TokenStore(self.work / "tokens" / region_slug(name) if self.work else None)
            self.scorers[name] = BatchScorer(self.encoder, self.tokens, self.scoring, store)
        return self.scorers[name]

    def score(self, progress: StageProgress | None = None) -> None:
        """Score every token of every study against the other studies (or the bank's volumes),
        region by region.

        Raises:
            ScreeningError: fewer than :data:`MIN_STUDIES` studies (none, with a bank), or a
                region or token set the bank does not hold.
        """
        check_batch_size(self.n_studies, against_bank=self.bank is not None)
        if self.bank is None:
            reference_count = self.n_studies
        else:
            self._check_bank()
            reference_count = len(self.bank.volumes)
        if reference_count < self.rules.min_batch_warning:
            self.warnings.append(
                f"only {reference_count} {'bank volumes' if self.bank else 'studies'} to "
                f"compare with; quality drops below about {self.rules.min_batch_warning} "
                "(the papers' batches hold 30 or more)"
            )
        for name, scorer in self.scorers.items():
            bank, search = self.bank, self.search
            references = (lambda key, name=name: bank.token_sets(name, key)) if bank else None
            index = (
                (lambda key, name=name: token_index(bank, name, key, search, self.scoring))
                if search in ("flat", "ivf")
                else None
            )
            self.results[name] = scorer.score(progress, references, index)
            for stage, seconds in self.results[name].timings.items():
                key = f"scorer_{stage}"
                self.timings[key] = self.timings.get(key, 0.0) + seconds
        token_scores = [
            s for r in self.results.values() for v in r.token_scores.values() for s in v
        ]
        low = min(0.0, min(float(s.min()) for s in token_scores))
        high = max(float(s.max()) for s in token_scores)
        self._voxels = StreamingPercentile(low, high)

    def _check_bank(self) -> None:
        for name, scorer in self.scorers.items():
            if name not in self.bank.regions:
                raise ScreeningError(
                    f"the bank holds no {name} region (it has {self.bank.regions})"
                )
            if sorted(scorer.store.keys()) != self.bank.keys:
                raise ScreeningError(f"the bank's {name} token sets are not this run's")

    def add_stored(self, volume: NewVolume) -> int:
        """Add a study from its stored token sets and masks (a bank's volume), not tokenised
        again; it is scored, mapped and recorded like the others (no source map: it has no
        source grid here). Returns its index."""
        if self.results:
            raise RuntimeError("studies cannot be added after scoring")
        study = {}
        for name, sets in volume.tokens.items():
            scorer = self._scorer_named(name)
            mask = np.asarray(volume.masks[name])
            study[name] = (scorer.add_tokens(dict(sets), mask.shape), StoredRegion(name, mask))
        self.studies.append(study)
        return len(self.studies) - 1

    def bank_volumes(
        self, indices: Sequence[int], ids: Sequence[str], dates: Sequence[str]
    ) -> list[NewVolume]:
        """Studies of this screening as reference-bank volumes (tokens and masks per region),
        with the given pseudonymous ids and study dates."""
        volumes = []
        for study_index, volume_id, date in zip(indices, ids, dates, strict=True):
            tokens, masks = {}, {}
            for name, (index, region) in self.studies[study_index].items():
                store = self.scorers[name].store
                keys = store.keys()
                tokens[name] = {key: store.get(index, key) for key in keys}
                masks[name] = np.asarray(region.mask)
            volumes.append(NewVolume(volume_id, tokens, masks, date))
        return volumes

    def voxel_maps(self, study: int, variant: str | None = None) -> dict[str, np.ndarray]:
        """Region -> (X, Y, Z) float32 standard-space map of one study; 0 outside its mask.

        ``variant`` defaults to the scored one (``C`` and ``F`` can be read from an MS run).
        """
        return {
            name: self.results[name].voxel_map(index, np.asarray(region.mask), variant)
            for name, (index, region) in self.studies[study].items()
        }

    def record(self, study: int, maps: dict[str, np.ndarray]) -> float:
        """Count a study's maps into the batch: its foreground voxels join the threshold and its
        patient score (returned) joins the flag rule's statistics. Record each study once."""
        if self._voxels is None:
            raise RuntimeError("score() first")
        if study in self.scores:
            raise ValueError(f"study {study} is already recorded")
        regions = self.studies[study]
        for name, voxel_map in maps.items():
            self._voxels.add(voxel_map[np.asarray(regions[name][1].mask)])
        self.scores[study] = study_score(maps)
        return self.scores[study]

    def calibrate(self) -> Calibration:
        """The threshold and flag statistics of the recorded studies.

        Raises:
            ScreeningError: no study was recorded.
        """
        if self._voxels is None or self._voxels.total == 0:
            raise ScreeningError("no study's voxel map could be made (see the failed rows)")
        if self.bank is not None:
            return Calibration.from_dict(self.bank.calibration)
        calibration = Calibration(
            self._voxels.percentile(self.rules.voxel_percentile),
            tuple(sorted(self.scores.values())),
            self.rules.flag_mad,
        )
        LOG.info(
            "scored %d studies; voxel threshold %.4g (%g-th percentile of %d voxels)",
            len(self.scores),
            calibration.voxel_threshold,
            self.rules.voxel_percentile,
            self._voxels.total,
        )
        return calibration

    def source_map(self, study: int, maps: dict[str, np.ndarray]) -> np.ndarray:
        """The study's map on its source grid (the source series' shape): each region's map
        resampled back, the largest where regions meet."""
        regions = self.studies[study]
        return np.max(
            [regions[name][1].transform.to_source(np.asarray(m)) for name, m in maps.items()],
            axis=0,
        )


def bank_calibration(bank: ReferenceBank, volume_ids: Sequence[str]) -> Calibration:
    """The leave-one-out calibration of some of a bank's volumes (those left after a removal),
    scored from their stored tokens with the settings the bank was built with.

    Raises:
        ScreeningError: fewer than :data:`MIN_STUDIES` volumes.
    """
    identity = bank.identity
    tokens = TokenSettings(**identity["tokens"] | {"axes": tuple(identity["tokens"]["axes"])})
    screening = Screening(
        None, tokens, ScoringSettings(**identity["scoring"]), ScreeningRules(**identity["rules"])
    )
    for volume_id in volume_ids:
        screening.add_stored(bank.volume(volume_id))
    screening.score()
    for index in range(screening.n_studies):
        screening.record(index, screening.voxel_maps(index))
    return screening.calibrate()
