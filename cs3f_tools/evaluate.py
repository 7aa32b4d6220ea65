"""The papers' metrics for one app run, against known truth.

    python -m cs3f_tools.evaluate --run OUT --truth TRUTH [--out metrics.json]

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
- patient AUROC per size class of the study's largest lesion (the normal studies against the
  abnormal ones of that class), so that missed tumour-sized lesions are told from lesions
  smaller than a token;
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
import sys
from pathlib import Path

import numpy as np

from cs3f.io.nifti_io import load_nifti
from cs3f.io.outputs import atomic_path, write_text
from cs3f.volume import spacing
from cs3f_tools.metrics import (
    METRIC_KEYS,
    SIZE_CLASSES,
    Curve,
    StudyMaps,
    group_auroc,
    metrics_of,
    voxel_metrics,
)

__all__ = [
    "METRIC_KEYS",
    "SIZE_CLASSES",
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
    by_size = ", ".join(
        f"{n} {_fmt(c['auroc'])} ({c['studies']})"
        for n, c in details["patient_auroc_by_largest_lesion"].items()
    )
    lines += [
        "",
        summary,
        "",
        "Patient AUROC of the normal studies against the abnormal ones whose largest lesion is "
        f"of each size class (studies): {by_size}.",
    ]
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
    parser = argparse.ArgumentParser(prog="python -m cs3f_tools.evaluate", description=__doc__)
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
