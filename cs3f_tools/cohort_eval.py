"""Score a cohort with known truth through the library, and evaluate it: the one path that the
benchmark (``bench/bench_cohort.py``) and the detection quality gate (``tests/``) share.

A research tool beside :mod:`cs3f_tools.cohort` and :mod:`cs3f_tools.evaluate`; the product
never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cs3f.decisions import ScreeningRules
from cs3f.encoders import SliceEncoder
from cs3f.method.batch_scorer import ScoringSettings
from cs3f.method.tokens import TokenSettings
from cs3f.preprocess.standard_space import GridTransform, Standardised
from cs3f.screening import Screening, study_score
from cs3f.volume import spacing
from cs3f_tools.metrics import METRIC_KEYS, StudyMaps, group_auroc, metrics_of

__all__ = ["CohortStudy", "score_cohort"]


@dataclass
class CohortStudy:
    """One standardised study and its truth.

    Attributes:
        uid: StudyInstanceUID (the truth's key).
        abnormal: whether the study has lesions.
        volume: (D0, D1, D2) float32 in [0, 1], the standard-space volume.
        mask: (D0, D1, D2) bool foreground of ``volume``.
        transform: standard grid <-> the study's source grid.
        lesions: bool lesion truth on the source grid.
    """

    uid: str
    abnormal: bool
    volume: np.ndarray
    mask: np.ndarray
    transform: GridTransform
    lesions: np.ndarray

    @property
    def region(self) -> Standardised:
        """The study as the one brain region screening compares."""
        return Standardised(
            "brain", self.volume, self.mask, self.transform, self.transform.target_affine
        )


def score_cohort(
    studies: Sequence[CohortStudy],
    encoder: SliceEncoder,
    tokens: TokenSettings,
    variants: tuple[str, ...] = ("MS", "C", "F"),
    chunk: int | None = None,
    brains: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Score ``studies`` in consecutive batches of ``chunk`` (default: all in one batch) and
    evaluate each variant of ``variants`` on the source grids, pooled over the batches.

    A batch is scored as variant C alone when ``variants == ("C",)`` (no fine search), else as
    MS, from which C and F are read. Returns, per variant: ``metrics`` (:data:`METRIC_KEYS`,
    rounded to 4 places), ``lesions`` and ``lesions_found`` per size class,
    ``patient_auroc_by_largest_lesion`` (:func:`cs3f_tools.metrics.size_class_auroc`),
    ``ranks`` (the 1-based patient-score rank of each abnormal study, best first, with its
    lesion volume in ml: a study whose lesions are all tiny cannot rank high on its maximum),
    ``base_brain_auroc``
    (:func:`cs3f_tools.evaluate.group_auroc` of ``brains``, uid -> base brain, when given) and
    ``seconds`` per scoring stage summed over the batches.
    """
    chunk = chunk or len(studies)
    scoring = ScoringSettings(variant="C" if variants == ("C",) else "MS")
    found: dict[str, tuple[list, list]] = {v: ([], []) for v in variants}
    timings: dict[str, float] = {}
    for first in range(0, len(studies), chunk):
        group = studies[first : first + chunk]
        screening = Screening(encoder, tokens, scoring, ScreeningRules())
        for study in group:
            screening.add([study.region])
        screening.score()
        for stage, seconds in screening.timings.items():
            stage = stage.removeprefix("scorer_")
            timings[stage] = timings.get(stage, 0.0) + seconds
        for index, study in enumerate(group):
            voxel_mm3 = float(np.prod(spacing(study.transform.source_affine)))
            for variant in variants:
                standard_maps = screening.voxel_maps(index, variant)
                patients, maps = found[variant]
                patients.append((study.uid, study.abnormal, study_score(standard_maps)))
                source_map = screening.source_map(index, standard_maps)
                maps.append(
                    StudyMaps(study.uid, study.abnormal, source_map, study.lesions, voxel_mm3)
                )
    results = {}
    for variant, (patients, maps) in found.items():
        metrics, details, _ = metrics_of(patients, maps)
        ranked = sorted(patients, key=lambda p: -p[2])
        lesion_ml = {m.uid: float(m.lesions.sum() * m.voxel_mm3 / 1000) for m in maps}
        results[variant] = {
            "metrics": {
                k: None if metrics[k] is None else round(metrics[k], 4) for k in METRIC_KEYS
            },
            "lesions": details["lesions"],
            "lesions_found": details["lesions_found"],
            "patient_auroc_by_largest_lesion": {
                k: {**v, "auroc": None if v["auroc"] is None else round(v["auroc"], 4)}
                for k, v in details["patient_auroc_by_largest_lesion"].items()
            },
            "ranks": [
                [n, round(lesion_ml[p[0]], 2)] for n, p in enumerate(ranked, start=1) if p[1]
            ],
            "base_brain_auroc": {
                k: None if v is None else round(v, 3)
                for k, v in group_auroc(patients, brains or {}).items()
            },
            "seconds": {k: round(v, 1) for k, v in timings.items()},
        }
    return results
