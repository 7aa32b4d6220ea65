"""The papers' metrics for one app run, against known truth.

    python -m cs3f.evaluate --run OUT --truth TRUTH [--out metrics.json]

``OUT`` is an app output folder (``scores.json`` and ``maps/<key>.nii.gz``); ``TRUTH`` holds
``labels.csv`` (study_instance_uid, abnormal 0/1) and ``masks/<StudyInstanceUID>.nii.gz``, lesion
masks on the source grid (a normal study may have none). Written next to ``--out`` (default
``OUT/metrics.json``): the JSON, a Markdown table (``.md``) and ROC / precision-recall plots
(``_roc.png``, ``_pr.png``).

Definitions, as in CS3F:

- patient level (the study's score against ``abnormal``): AUROC, AP, max-F1;
- voxel level, over the foreground voxels of every study (the map's non-zero voxels, i.e. the
  region that was scored, plus any lesion voxel outside it, which then counts with score 0):
  AUROC, AP; Dice-max and IoU at the Dice-maximising threshold, pooled over abnormal studies;
- at 99 % voxel specificity (the lowest threshold at which at most 1 % of the non-lesion
  foreground voxels of all studies are above it): lesion-wise TPR per size class (18-connected
  lesion components; under 3 mm equivalent-sphere diameter excluded; small < 100 mm^3,
  medium 100-1000 mm^3, large 1000-5000 mm^3, xlarge >= 5000 mm^3 (CS3F's "large" is the last
  two together); a lesion is found when any of its voxels is above the
  threshold), pooled Dice over abnormal studies, and false-positive components (18-connected
  above-threshold components touching no lesion) per study.

All curves come from one sort of the scores (:class:`Curve`), never a pairwise structure, so
millions of voxels are fine. A metric with nothing to measure (e.g. no small lesions) is null.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from cs3f.nifti_io import load_nifti
from cs3f.outputs import atomic_path, write_text
from cs3f.volume import spacing

__all__ = [
    "Curve",
    "StudyMaps",
    "evaluate",
    "group_auroc",
    "load_run",
    "main",
    "metrics_of",
    "read_groups",
    "read_labels",
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


def _lesion_hits(study: StudyMaps, found: np.ndarray) -> dict[str, list[bool]]:
    labels, count = ndimage.label(study.lesions, CONNECTIVITY)
    hits: dict[str, list[bool]] = {name: [] for name in SIZE_CLASSES}
    if count == 0:
        return hits
    volumes = np.bincount(labels.ravel())[1:] * study.voxel_mm3
    detected = ndimage.maximum(found, labels, np.arange(1, count + 1))
    for volume, hit in zip(volumes, detected, strict=True):
        if (6 * volume / math.pi) ** (1 / 3) < MIN_DIAMETER_MM:
            continue
        name = next(n for n, (low, high) in SIZE_CLASSES.items() if low <= volume < high)
        hits[name].append(bool(hit))
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


def _label_rows(truth: Path) -> list[dict[str, str]]:
    """The rows of ``truth/labels.csv``."""
    path = truth / "labels.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_labels(truth: Path) -> dict[str, bool]:
    path = truth / "labels.csv"
    rows = _label_rows(truth)
    if not rows or not {"study_instance_uid", "abnormal"} <= set(rows[0]):
        raise ValueError(f"{path} needs the columns study_instance_uid and abnormal")
    labels = {}
    for row in rows:
        if row["abnormal"].strip() not in ("0", "1"):
            raise ValueError(f"{path}: abnormal must be 0 or 1, got {row['abnormal']!r}")
        labels[row["study_instance_uid"].strip()] = row["abnormal"].strip() == "1"
    return labels


def load_run(run: Path, truth: Path) -> tuple[list[tuple[str, bool, float]], list[StudyMaps], dict]:
    """Match an app run to the truth.

    Returns (patient rows (uid, abnormal, score) for scored studies, their maps, counts). A study
    in the truth that the run did not score is counted and left out (it has no score to rank).

    Raises:
        ValueError: a mask's grid differs from its map's, or an abnormal study has no mask.
    """
    labels = read_labels(truth)
    studies = json.loads((run / "scores.json").read_text(encoding="utf-8"))["studies"]
    by_uid = {s["study_instance_uid"]: s for s in studies}
    patients, maps, unscored = [], [], []
    for uid in sorted(labels):
        study = by_uid.get(uid)
        if study is None or study["status"] != "scored":
            unscored.append(uid)
            continue
        score_map = load_nifti(run / "maps" / f"{study['key']}.nii.gz")
        mask_path = truth / "masks" / f"{uid}.nii.gz"
        if mask_path.is_file():
            mask = load_nifti(mask_path)
            if mask.shape != score_map.shape or not np.allclose(
                mask.affine, score_map.affine, atol=1e-3
            ):
                raise ValueError(f"the truth mask of study {study['key']} is not on its map's grid")
            lesions = mask.array > 0
        elif labels[uid]:
            raise ValueError(f"abnormal study {study['key']} has no mask in {truth / 'masks'}")
        else:
            lesions = np.zeros(score_map.shape, bool)
        patients.append((uid, labels[uid], float(study["score"])))
        voxel_mm3 = float(np.prod(spacing(score_map.affine)))
        maps.append(StudyMaps(uid, labels[uid], score_map.array, lesions, voxel_mm3))
    counts = {
        "studies_in_truth": len(labels),
        "studies_scored": len(patients),
        "studies_unscored": len(unscored),
        "abnormal_scored": sum(1 for p in patients if p[1]),
        "studies_not_in_truth": len(set(by_uid) - set(labels)),
    }
    return patients, maps, counts


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
    return metrics, details, {"patient": patient_curve, "voxel": voxel_curve}


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


def read_groups(truth: Path, column: str) -> dict[str, str]:
    """``column`` of labels.csv per study uid ({} when labels.csv has no such column)."""
    return {r["study_instance_uid"].strip(): r[column] for r in _label_rows(truth) if column in r}


def evaluate(run: Path, truth: Path) -> tuple[dict, dict, dict[str, Curve]]:
    """All metrics for one app run against the truth (see :func:`metrics_of`); the details
    also count the studies matched and left out and, when labels.csv names each study's base
    brain (the cohort builder's ``brain`` column), the :func:`group_auroc` of the base brains."""
    patients, maps, counts = load_run(Path(run), Path(truth))
    metrics, details, curves = metrics_of(patients, maps)
    brains = read_groups(Path(truth), "brain")
    if brains:
        details["base_brain_auroc"] = group_auroc(patients, brains)
    return metrics, counts | details, curves


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def markdown(metrics: dict, details: dict) -> str:
    """A Markdown table of the metrics and what they were computed on."""
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(metrics[key])} |" for key in METRIC_KEYS]
    lesions = ", ".join(
        f"{n} {details['lesions_found'][n]}/{details['lesions'][n]}" for n in SIZE_CLASSES
    )
    summary = (
        f"Studies scored: {details['studies_scored']} of {details['studies_in_truth']} "
        f"({details['abnormal_scored']} abnormal); foreground voxels: "
        f"{details['foreground_voxels']:,}, lesion voxels: {details['lesion_voxels']:,}; "
        f"lesions found at 99 % voxel specificity: {lesions}."
    )
    lines += ["", summary]
    return "\n".join(lines) + "\n"


def _thin(x: np.ndarray, y: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    keep = np.unique(np.linspace(0, x.size - 1, min(points, x.size)).astype(int))
    return x[keep], y[keep]


def plot_curves(curves: dict[str, Curve], roc_path: Path, pr_path: Path) -> None:
    """ROC and precision-recall plots (PNG) of the patient and voxel curves."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    for path, kind in ((roc_path, "roc"), (pr_path, "pr")):
        figure, axes = plt.subplots(figsize=(4.5, 4.5), dpi=120)
        for name, curve in curves.items():
            if not curve.defined:
                continue
            if kind == "roc":
                x, y = _thin(curve.fpr(), curve.tpr())
                label = f"{name} (AUROC {curve.auroc():.3f})"
            else:
                x, y = _thin(curve.tp / curve.positives, curve.precision())
                label = f"{name} (AP {curve.average_precision():.3f})"
            axes.plot(x, y, label=label, drawstyle="default" if kind == "roc" else "steps-post")
        axes.set(
            xlabel="false-positive rate" if kind == "roc" else "recall",
            ylabel="true-positive rate" if kind == "roc" else "precision",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        axes.legend(loc="lower right" if kind == "roc" else "upper right", fontsize=8)
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
        plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cs3f.evaluate", description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="app output folder")
    parser.add_argument("--truth", type=Path, required=True, help="labels.csv and masks/")
    parser.add_argument("--out", type=Path, help="metrics JSON (default RUN/metrics.json)")
    args = parser.parse_args(argv)
    out = args.out or args.run / "metrics.json"
    try:
        metrics, details, curves = evaluate(args.run, args.truth)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_text(out, json.dumps(metrics | {"details": details}, indent=2) + "\n")
    write_text(out.with_suffix(".md"), markdown(metrics, details))
    stem = out.with_suffix("")
    plot_curves(curves, Path(f"{stem}_roc.png"), Path(f"{stem}_pr.png"))
    print(markdown(metrics, details), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
