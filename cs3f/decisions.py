"""What turns scores into decisions: the rules (:class:`ScreeningRules`) and the statistics
that apply them (:class:`Calibration`: the voxel threshold and the reference's patient scores),
whether those come from the batch itself or from a reference bank."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["MAD_TO_SD", "Calibration", "ScreeningRules"]

MAD_TO_SD = 1.4826  # a normal distribution's standard deviation per median absolute deviation


@dataclass(frozen=True)
class ScreeningRules:
    """The batch's decision rules; the defaults are the papers'.

    Attributes:
        voxel_percentile: the SEG threshold is this percentile (0-100, exclusive) of all
            foreground voxel scores of the batch (99 = the 99 % specificity point of a mostly
            normal batch).
        flag_mad: a study is flagged when its score exceeds the batch median by this many
            robust standard deviations (1.4826 x MAD); > 0.
        min_batch_warning: fewer scored studies than this gives a warning (quality drops); >= 2.
    """

    voxel_percentile: float = 99.0
    flag_mad: float = 3.0
    min_batch_warning: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.voxel_percentile < 100:
            raise ValueError(f"voxel_percentile must be in (0, 100), got {self.voxel_percentile}")
        if not self.flag_mad > 0:
            raise ValueError(f"flag_mad must be > 0, got {self.flag_mad}")
        if self.min_batch_warning < 2:
            raise ValueError(f"min_batch_warning must be >= 2, got {self.min_batch_warning}")


@dataclass(frozen=True)
class Calibration:
    """What turns scores into decisions: the voxel threshold and the reference's patient scores.

    Attributes:
        voxel_threshold: a voxel is abnormal when its score is above this (score units).
        reference_scores: the patient scores the flag rule and the percentile measure against,
            sorted ascending (the batch's own; a bank's stored ones later).
        flag_mad: see :class:`ScreeningRules`.
    """

    voxel_threshold: float
    reference_scores: tuple[float, ...]
    flag_mad: float

    @property
    def median(self) -> float:
        return float(np.median(self.reference_scores))

    @property
    def robust_sd(self) -> float:
        """1.4826 x the median absolute deviation of the reference scores."""
        values = np.asarray(self.reference_scores)
        return MAD_TO_SD * float(np.median(np.abs(values - self.median)))

    @property
    def flag_threshold(self) -> float:
        """The score above which a study is flagged: median + flag_mad x robust SD (+inf when
        the MAD is 0: scores that do not spread flag nothing)."""
        sd = self.robust_sd
        return self.median + self.flag_mad * sd if sd > 0 else float("inf")

    def flagged(self, score: float) -> bool:
        """Whether a patient score is an outlier of the reference."""
        return bool(score > self.flag_threshold)

    def percentile(self, score: float) -> float:
        """Percentage of reference scores <= ``score``, rounded to 2 places."""
        return round(100.0 * float(np.mean(np.asarray(self.reference_scores) <= score)), 2)

    def segment(self, voxel_map: np.ndarray) -> np.ndarray:
        """Bool mask of the voxels above the threshold (any shape)."""
        return voxel_map > self.voxel_threshold

    def as_dict(self) -> dict:
        """JSON-ready fields (a reference bank stores them)."""
        return dataclasses.asdict(self) | {"reference_scores": list(self.reference_scores)}

    @classmethod
    def from_dict(cls, fields: Mapping) -> Calibration:
        return cls(
            float(fields["voxel_threshold"]),
            tuple(float(v) for v in fields["reference_scores"]),
            float(fields["flag_mad"]),
        )
