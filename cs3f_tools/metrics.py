"""The metric math of the evaluator: operating-point curves of a score from one sort
(:class:`Curve`), patient-level AUROC / AP / max-F1, voxel- and lesion-level metrics of
studies' maps against their lesion masks (:func:`voxel_metrics`, :func:`metrics_of`), the
patient AUROC per size class of the largest lesion (:func:`size_class_auroc`) and the AUROC of
groups of normal studies (:func:`group_auroc`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "METRIC_KEYS",
    "SIZE_CLASSES",
    "Curve",
    "StudyMaps",
    "group_auroc",
    "metrics_of",
    "size_class_auroc",
    "voxel_metrics",
]

METRIC_KEYS = (
    "p_auroc",
    "p_ap",
    "p_f1",
    "v_auroc",
    "v_ap",
    "dice",
    "iou",
    "ltpr99_small",
    "ltpr99_medium",
    "ltpr99_large",
    "ltpr99_xlarge",
    "dice99",
    "fp_per_volume",
)
# CS3F's three classes, with its "large" split at 5 ml so that tumour- and stroke-sized lesions
# (5 to about 100 ml) are reported on their own; CS3F's "large" is large + xlarge
SIZE_CLASSES = {
    "small": (0.0, 100.0),
    "medium": (100.0, 1000.0),
    "large": (1000.0, 5000.0),
    "xlarge": (5000.0, math.inf),
}
MIN_DIAMETER_MM = 3.0
SPECIFICITY = 0.99
CONNECTIVITY = ndimage.generate_binary_structure(3, 2)  # 18-connected


@dataclass(frozen=True)
class Curve:
    """Every operating point of a score, from one sort: at ``thresholds[i]`` (descending, one per
    distinct score) ``tp[i]`` positives and ``fp[i]`` negatives score >= the threshold.

    ``positives`` and ``negatives`` are the totals.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int

    @classmethod
    def from_scores(cls, scores: np.ndarray, labels: np.ndarray) -> Curve:
        """``scores`` (N,) any real; ``labels`` (N,) bool or 0/1."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        labels = np.asarray(labels, dtype=bool).ravel()
        if scores.shape != labels.shape:
            raise ValueError(f"{scores.size} scores for {labels.size} labels")
        order = np.argsort(-scores, kind="stable")
        ordered, hits = scores[order], labels[order]
        last = np.r_[np.diff(ordered), -1][: ordered.size]  # non-zero at the last of a tie
        ends = np.flatnonzero(last)
        tp = np.cumsum(hits)[ends]
        return cls(ordered[ends], tp, ends + 1 - tp, int(labels.sum()), int((~labels).sum()))

    @property
    def defined(self) -> bool:
        """Both classes are present (otherwise AUROC, AP and F1 are undefined: None)."""
        return self.positives > 0 and self.negatives > 0

    def fpr(self) -> np.ndarray:
        return np.r_[0.0, self.fp / max(self.negatives, 1)]

    def tpr(self) -> np.ndarray:
        return np.r_[0.0, self.tp / max(self.positives, 1)]

    def precision(self) -> np.ndarray:
        return self.tp / (self.tp + self.fp)

    def auroc(self) -> float | None:
        """Area under the ROC curve (trapezoids; ties form one diagonal step)."""
        return float(np.trapezoid(self.tpr(), self.fpr())) if self.defined else None

    def average_precision(self) -> float | None:
        """sum_n (R_n - R_(n-1)) P_n over the thresholds, as scikit-learn defines AP."""
        if not self.defined:
            return None
        return float(np.sum(np.diff(self.tpr()) * self.precision()))

    def best_f1(self) -> tuple[float | None, float | None]:
        """(max F1 = Dice over all thresholds, its threshold)."""
        if not self.defined:
            return None, None
        f1 = 2 * self.tp / (self.tp + self.fp + self.positives)
        best = int(np.argmax(f1))
        return float(f1[best]), float(self.thresholds[best])

    def threshold_at_specificity(self, specificity: float) -> float:
        """The lowest threshold at which at most 1 - ``specificity`` of the negatives are >= it."""
        allowed = np.flatnonzero(self.fp <= (1 - specificity) * self.negatives)
        return float(self.thresholds[allowed[-1]]) if allowed.size else math.inf


@dataclass
class StudyMaps:
    """One study's map and truth on its source grid: ``scores`` and ``lesions`` (I, J, K)."""

    uid: str
    abnormal: bool
    scores: np.ndarray
    lesions: np.ndarray
    voxel_mm3: float

    @property
    def foreground(self) -> np.ndarray:
        return (self.scores != 0) | self.lesions


def _dice(curve: Curve, threshold: float) -> float | None:
    if curve.positives == 0:
        return None
    index = np.searchsorted(-curve.thresholds, -threshold, side="right") - 1
    tp, fp = (curve.tp[index], curve.fp[index]) if index >= 0 else (0, 0)
    return float(2 * tp / (tp + fp + curve.positives))


def _size_class(volume_mm3: float) -> str:
    return next(n for n, (low, high) in SIZE_CLASSES.items() if low <= volume_mm3 < high)


def _lesion_components(study: StudyMaps) -> tuple[np.ndarray, np.ndarray]:
    """(18-connected component labels (I, J, K), each component's volume in mm^3 (C,))."""
    labels, _ = ndimage.label(study.lesions, CONNECTIVITY)
    return labels, np.bincount(labels.ravel())[1:] * study.voxel_mm3


def _lesion_hits(study: StudyMaps, found: np.ndarray) -> dict[str, list[bool]]:
    labels, volumes = _lesion_components(study)
    hits: dict[str, list[bool]] = {name: [] for name in SIZE_CLASSES}
    if volumes.size == 0:
        return hits
    detected = ndimage.maximum(found, labels, np.arange(1, volumes.size + 1))
    for volume, hit in zip(volumes, detected, strict=True):
        if (6 * volume / math.pi) ** (1 / 3) < MIN_DIAMETER_MM:
            continue
        hits[_size_class(volume)].append(bool(hit))
    return hits


def _false_positive_components(study: StudyMaps, found: np.ndarray) -> int:
    labels, count = ndimage.label(found, CONNECTIVITY)
    if count == 0:
        return 0
    touching = ndimage.maximum(study.lesions, labels, np.arange(1, count + 1))
    return int(np.sum(~np.asarray(touching, dtype=bool)))


def voxel_metrics(studies: Sequence[StudyMaps]) -> tuple[dict, dict, Curve]:
    """Voxel- and lesion-level metrics over ``studies`` -> (metrics, details, voxel curve)."""
    scores = np.concatenate([s.scores[s.foreground] for s in studies])
    truth = np.concatenate([s.lesions[s.foreground] for s in studies])
    voxels = Curve.from_scores(scores, truth)
    abnormal = [s for s in studies if s.abnormal]
    pooled = Curve.from_scores(
        np.concatenate([np.zeros(0)] + [s.scores[s.foreground] for s in abnormal]),
        np.concatenate([np.zeros(0, bool)] + [s.lesions[s.foreground] for s in abnormal]),
    )
    dice, dice_threshold = pooled.best_f1()
    threshold = voxels.threshold_at_specificity(SPECIFICITY)
    hits: dict[str, list[bool]] = {name: [] for name in SIZE_CLASSES}
    false_positives = 0
    for study in studies:
        found = (study.scores >= threshold) & study.foreground
        for name, found_lesions in _lesion_hits(study, found).items():
            hits[name] += found_lesions
        false_positives += _false_positive_components(study, found)
    metrics = {
        "v_auroc": voxels.auroc(),
        "v_ap": voxels.average_precision(),
        "dice": dice,
        "iou": None if dice is None else dice / (2 - dice),
        **{f"ltpr99_{n}": float(np.mean(h)) if h else None for n, h in hits.items()},
        "dice99": _dice(pooled, threshold),
        "fp_per_volume": false_positives / len(studies),
    }
    details = {
        "foreground_voxels": int(scores.size),
        "lesion_voxels": int(truth.sum()),
        "dice_threshold": dice_threshold,
        "threshold_99": threshold if math.isfinite(threshold) else None,
        "lesions": {n: len(h) for n, h in hits.items()},
        "lesions_found": {n: int(sum(h)) for n, h in hits.items()},
        "false_positive_components": false_positives,
    }
    return metrics, details, voxels


def metrics_of(
    patients: Sequence[tuple[str, bool, float]], maps: Sequence[StudyMaps]
) -> tuple[dict, dict, dict[str, Curve]]:
    """Metrics of scored studies: ``patients`` (uid, abnormal, score) and their ``maps`` ->
    (metrics with :data:`METRIC_KEYS`, details, the patient and voxel curves)."""
    if not patients:
        raise ValueError("no study of the truth was scored in this run")
    labels = np.array([p[1] for p in patients])
    patient_curve = Curve.from_scores(np.array([p[2] for p in patients]), labels)
    p_f1, p_threshold = patient_curve.best_f1()
    voxel, details, voxel_curve = voxel_metrics(maps)
    metrics = {
        "p_auroc": patient_curve.auroc(),
        "p_ap": patient_curve.average_precision(),
        "p_f1": p_f1,
        **voxel,
    }
    details["patient_f1_threshold"] = p_threshold
    details["patient_auroc_by_largest_lesion"] = size_class_auroc(patients, maps)
    return metrics, details, {"patient": patient_curve, "voxel": voxel_curve}


def size_class_auroc(
    patients: Sequence[tuple[str, bool, float]], maps: Sequence[StudyMaps]
) -> dict[str, dict]:
    """Patient AUROC per size class: for each class of :data:`SIZE_CLASSES`, the normal
    studies' scores against those of the abnormal studies whose largest lesion (18-connected
    component, by volume in mm^3) falls in that class -> {class: {"studies": n abnormal,
    "auroc": float or None}}. A study with only sub-millimetre specks counts as small. This
    tells a batch that misses tumour-sized lesions from one whose abnormal studies carry only
    lesions smaller than a token."""
    largest = {
        m.uid: _size_class(float(volumes.max()))
        for m in maps
        if m.abnormal and (volumes := _lesion_components(m)[1]).size
    }
    normal = [score for _, abnormal, score in patients if not abnormal]
    out = {}
    for name in SIZE_CLASSES:
        hits = [score for uid, abnormal, score in patients if abnormal and largest.get(uid) == name]
        curve = Curve.from_scores(
            np.array(normal + hits), np.r_[np.zeros(len(normal), bool), np.ones(len(hits), bool)]
        )
        out[name] = {"studies": len(hits), "auroc": curve.auroc()}
    return out


def group_auroc(
    patients: Sequence[tuple[str, bool, float]], groups: dict[str, str]
) -> dict[str, float | None]:
    """How well the score of the *normal* studies tells each group from the others: for every
    group g of ``groups`` (uid -> group, e.g. the cohort's base brain), the AUROC of "in g"
    against the patient score. 0.5 = the score ignores the group; near 0 or 1 = the score
    measures the group (a confound), whatever the lesions do. None where undefined."""
    normal = [(uid, score) for uid, abnormal, score in patients if not abnormal and uid in groups]
    scores = np.array([score for _, score in normal])
    return {
        group: Curve.from_scores(
            scores, np.array([groups[uid] == group for uid, _ in normal])
        ).auroc()
        for group in sorted({groups[uid] for uid, _ in normal})
    }
