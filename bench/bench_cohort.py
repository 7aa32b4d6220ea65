"""The papers' metrics on a benchmark cohort, and the ablations they report; prints one JSON.

    .venv/bin/python -m cs3f.cohort --out bench/out/cohort40 --normal 30 --abnormal 10 --seed 1
    .venv/bin/python bench/bench_cohort.py --cohort bench/out/cohort40 > cohort.json

Every study is read and preprocessed once with the library calls the app's operators make
(DICOM series -> volume -> brain preprocessing) and cached in ``<cohort>/standard/``. Then each
configuration tokenises with the weight-free ``pixels`` encoder, scores, maps back onto the
source grid and is evaluated with :func:`cs3f.evaluate.metrics_of` against ``<cohort>/truth``:

- ``MS`` / ``C`` / ``F``: the three variants (one scoring; C and F are read from the MS run);
- ``axial only``: tokens from axis 2 (axial slices of the RAS standard grid) instead of all three;
- ``d=64``, ``d=32``: the projected token dimension (default 128);
- ``B=20``, ``B=10``: the cohort scored in consecutive chunks of that size, as a site scoring
  smaller batches would; the metrics pool all chunks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cs3f.dicom_volume import series_volume
from cs3f.encoders import load_encoder
from cs3f.evaluate import METRIC_KEYS, StudyMaps, metrics_of, read_labels
from cs3f.maps import patient_score
from cs3f.nifti_io import load_nifti
from cs3f.pipeline import BatchScorer, ScoringSettings
from cs3f.preprocess import preprocess
from cs3f.standard_space import GridTransform, PreprocessingFailed, PreprocessSettings
from cs3f.tokens import TokenSettings
from cs3f.volume import spacing


@dataclasses.dataclass
class Study:
    uid: str
    abnormal: bool
    volume: np.ndarray  # standard space, (224, 224, 224) float32 in [0, 1]
    mask: np.ndarray
    transform: GridTransform
    lesions: np.ndarray  # truth on the source grid


def _standardise(folder: Path, cache: Path) -> tuple[str, np.ndarray, np.ndarray, GridTransform]:
    path = cache / f"{folder.name}.npz"
    if not path.is_file():
        volume, slices = series_volume([pydicom.dcmread(p) for p in sorted(folder.iterdir())])
        region = preprocess(volume, "brain-mri", PreprocessSettings())[0]
        t = region.transform
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            uid=slices[0].StudyInstanceUID,
            volume=region.volume.astype(np.float16),
            mask=np.packbits(region.mask),
            source=np.r_[t.source_shape, t.target_shape],
            source_affine=t.source_affine,
            target_affine=t.target_affine,
        )
    data = np.load(path)
    source_shape, target_shape = tuple(data["source"][:3]), tuple(data["source"][3:])
    mask = np.unpackbits(data["mask"], count=int(np.prod(target_shape))).reshape(target_shape)
    transform = GridTransform(
        source_shape, data["source_affine"], target_shape, data["target_affine"]
    )
    return str(data["uid"]), data["volume"].astype(np.float32), mask.astype(bool), transform


def load_studies(cohort: Path) -> tuple[list[Study], list[str]]:
    """The cohort's studies in folder order, standardised (cached); and the ones that failed."""
    labels = read_labels(cohort / "truth")
    studies, failed = [], []
    folders = sorted(p for p in (cohort / "studies").iterdir() if p.is_dir())
    for n, folder in enumerate(folders, start=1):
        start = time.perf_counter()
        try:
            uid, volume, mask, transform = _standardise(folder, cohort / "standard")
        except PreprocessingFailed as exc:
            failed.append(f"{folder.name}: {exc}")
            continue
        lesions = load_nifti(cohort / "truth" / "masks" / f"{uid}.nii.gz").array > 0
        studies.append(Study(uid, labels[uid], volume, mask, transform, lesions))
        print(f"study {n}/{len(folders)}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return studies, failed


def run(
    studies: list[Study], tokens: TokenSettings, chunk: int, variants: tuple[str, ...]
) -> dict[str, dict]:
    """Score ``studies`` in chunks of ``chunk`` and evaluate every variant in ``variants``."""
    encoder = load_encoder("pixels")
    found: dict[str, tuple[list, list]] = {v: ([], []) for v in variants}
    timings: dict[str, float] = {}
    for first in range(0, len(studies), chunk):
        group = studies[first : first + chunk]
        scorer = BatchScorer(encoder, tokens, ScoringSettings(variant="MS"))
        for study in group:
            scorer.add(study.volume, study.mask)
        scores = scorer.score()
        for stage, seconds in scores.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        for index, study in enumerate(group):
            voxel_mm3 = float(np.prod(spacing(study.transform.source_affine)))
            for variant in variants:
                standard_map = scores.voxel_map(index, study.mask, variant)
                source_map = study.transform.to_source(standard_map)
                patients, maps = found[variant]
                patients.append((study.uid, study.abnormal, patient_score(standard_map)))
                maps.append(
                    StudyMaps(study.uid, study.abnormal, source_map, study.lesions, voxel_mm3)
                )
    results = {}
    for variant, (patients, maps) in found.items():
        metrics, details, _ = metrics_of(patients, maps)
        results[variant] = {
            "metrics": {
                k: None if metrics[k] is None else round(metrics[k], 4) for k in METRIC_KEYS
            },
            "lesions": details["lesions"],
            "lesions_found": details["lesions_found"],
            "seconds": {k: round(v, 1) for k, v in timings.items()},
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument(
        "--only", nargs="*", help="configurations to run (default: all)", default=None
    )
    args = parser.parse_args()
    start = time.perf_counter()
    studies, failed = load_studies(args.cohort)
    preprocess_s = time.perf_counter() - start
    base = TokenSettings()
    configurations = {
        "MS/C/F, three axes, d=128, B=all": (base, len(studies), ("MS", "C", "F")),
        "axial only": (dataclasses.replace(base, axes=(2,)), len(studies), ("MS",)),
        "d=64": (dataclasses.replace(base, dim=64), len(studies), ("MS",)),
        "d=32": (dataclasses.replace(base, dim=32), len(studies), ("MS",)),
        "B=20": (base, 20, ("MS",)),
        "B=10": (base, 10, ("MS",)),
    }
    results = {}
    for name, (tokens, chunk, variants) in configurations.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        for variant, result in run(studies, tokens, chunk, variants).items():
            label = f"{name}: {variant}" if len(variants) > 1 else name
            results[label] = result
            print(label, json.dumps(result["metrics"]), file=sys.stderr)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    report = {
        "machine": {"cpu": platform.machine(), "python": platform.python_version()},
        "commit": commit,
        "cohort": str(args.cohort),
        "studies": len(studies),
        "abnormal": sum(s.abnormal for s in studies),
        "failed": failed,
        "preprocess_s": round(preprocess_s, 1),
        "encoder": "pixels",
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
