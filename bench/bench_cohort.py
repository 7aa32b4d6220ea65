"""The papers' metrics on a benchmark cohort, and the ablations they report; prints one JSON.

    .venv/bin/python -m cs3f_tools.cohort --out bench/out/cohort40 --normal 30 --abnormal 10 --seed 1
    .venv/bin/python bench/bench_cohort.py --cohort bench/out/cohort40 > cohort.json
    .venv/bin/python bench/bench_cohort.py --cohort bench/out/cohort40 --coarse-only \
        --encoder histogram filterbank gabor pixels --only "three axes, d=128, B=all"

Every study is read and preprocessed once with the library calls the app's operators make
(DICOM series -> volume -> brain preprocessing), cached in ``<cohort>/registered/`` before
the intensity standardisation, which is redone at every load. Then each
configuration, for each ``--encoder`` (default ``histogram``; ``dinov2`` takes ``--model``),
tokenises, scores, maps back onto the source grid and is evaluated with
:func:`cs3f_tools.evaluate.metrics_of` against ``<cohort>/truth``, with the AUROC of each base brain
against the normal studies' scores (:func:`cs3f_tools.evaluate.group_auroc`, 0.5 = no confound):

- ``MS`` / ``C`` / ``F``: the three variants (one scoring; C and F are read from the MS run);
  with ``--coarse-only`` every configuration has coarse tokens only and is scored as variant C
  (the same C map as from the MS run, without the fine search: minutes instead of an hour);
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
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provenance import commit

from cs3f.encoders import load_encoder
from cs3f.io.dicom_volume import series_volume
from cs3f.io.nifti_io import load_nifti
from cs3f.method.tokens import TokenSettings
from cs3f.preprocess.brain import preprocess_brain
from cs3f.preprocess.intensity import load_landmarks, nyul_unit
from cs3f.preprocess.standard_space import GridTransform, PreprocessingFailed, PreprocessSettings
from cs3f_tools.cohort_eval import CohortStudy, score_cohort
from cs3f_tools.evaluate import read_groups, read_labels


def read_cached(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One study of the registered cache: its arrays (``uid``, ``volume``, ``mask`` packed,
    ``source`` = source then target shape, ``source_affine``, ``target_affine``) and its
    standard-grid brain mask unpacked (bool)."""
    data = dict(np.load(path))
    shape = tuple(int(n) for n in data["source"][3:])
    mask = np.unpackbits(data["mask"], count=int(np.prod(shape))).reshape(shape).astype(bool)
    return data, mask


def _standardise(folder: Path, cache: Path) -> tuple[str, np.ndarray, np.ndarray, GridTransform]:
    """A study's standard-space volume. The expensive part (registration, brain extraction, bias
    correction) is done once and cached before intensity standardisation, as ``<name>.npz`` (a
    failure too, as ``<name>.failed`` holding the reason); Nyul standardisation, a second, runs
    at every load, so a change to it needs no new registration. Same calls and values as
    :func:`cs3f.preprocess.preprocess` for brain MRI."""
    path, failure = cache / f"{folder.name}.npz", cache / f"{folder.name}.failed"
    if failure.is_file():
        raise PreprocessingFailed(failure.read_text(encoding="utf-8"))
    settings = PreprocessSettings()
    if not path.is_file():
        volume, slices = series_volume([pydicom.dcmread(p) for p in sorted(folder.iterdir())])
        cache.mkdir(parents=True, exist_ok=True)
        try:
            region = preprocess_brain(volume, settings, standardise_intensity=False)
        except PreprocessingFailed as exc:
            failure.write_text(str(exc), encoding="utf-8")
            raise
        t = region.transform
        np.savez(
            path,
            uid=slices[0].StudyInstanceUID,
            volume=region.volume,
            mask=np.packbits(region.mask),
            source=np.r_[t.source_shape, t.target_shape],
            source_affine=t.source_affine,
            target_affine=t.target_affine,
        )
    data, mask = read_cached(path)
    source_shape, target_shape = tuple(data["source"][:3]), tuple(data["source"][3:])
    transform = GridTransform(
        source_shape, data["source_affine"], target_shape, data["target_affine"]
    )
    volume = nyul_unit(data["volume"], mask, load_landmarks(settings.landmarks))
    return str(data["uid"]), volume, mask, transform


def load_studies(cohort: Path) -> tuple[list[CohortStudy], list[str]]:
    """The cohort's studies in folder order, standardised (cached); and the ones that failed."""
    labels = read_labels(cohort / "truth")
    studies, failed = [], []
    folders = sorted(p for p in (cohort / "studies").iterdir() if p.is_dir())
    for n, folder in enumerate(folders, start=1):
        start = time.perf_counter()
        try:
            uid, volume, mask, transform = _standardise(folder, cohort / "registered")
        except PreprocessingFailed as exc:
            failed.append(f"{folder.name}: {exc}")
            continue
        lesions = load_nifti(cohort / "truth" / "masks" / f"{uid}.nii.gz").array > 0
        studies.append(CohortStudy(uid, labels[uid], volume, mask, transform, lesions))
        print(f"study {n}/{len(folders)}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return studies, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument(
        "--only", nargs="*", help="configurations to run (default: all)", default=None
    )
    parser.add_argument(
        "--encoder",
        nargs="+",
        default=["histogram"],
        help="encoders to compare (default: histogram)",
    )
    parser.add_argument("--model", type=Path, help="model folder for the dinov2 encoder")
    parser.add_argument(
        "--coarse-only", action="store_true", help="variant C alone, without fine tokens"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    studies, failed = load_studies(args.cohort)
    preprocess_s = time.perf_counter() - start
    base = TokenSettings()
    configurations = {
        "three axes, d=128, B=all": (base, len(studies), ("MS", "C", "F")),
        "axial only": (dataclasses.replace(base, axes=(2,)), len(studies), ("MS",)),
        "d=64": (dataclasses.replace(base, dim=64), len(studies), ("MS",)),
        "d=32": (dataclasses.replace(base, dim=32), len(studies), ("MS",)),
        "B=20": (base, 20, ("MS",)),
        "B=10": (base, 10, ("MS",)),
    }
    brains = read_groups(args.cohort / "truth", "brain")
    results = {}
    for encoder_name in args.encoder:
        encoder = load_encoder(encoder_name, args.model)
        for name, (tokens, chunk, variants) in configurations.items():
            if args.only and name not in args.only:
                continue
            if args.coarse_only:
                tokens, variants = dataclasses.replace(tokens, q_fine=None), ("C",)
            t0 = time.perf_counter()
            results_of = score_cohort(studies, encoder, tokens, variants, chunk, brains)
            for variant, result in results_of.items():
                label = f"{encoder.name}: {name}" + (f": {variant}" if len(variants) > 1 else "")
                results[label] = result
                print(label, json.dumps(result["metrics"]), file=sys.stderr)
                print(label, json.dumps(result["base_brain_auroc"]), file=sys.stderr)
            print(f"{encoder.name}: {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    report = {
        "machine": {"cpu": platform.machine(), "python": platform.python_version()},
        "commit": commit(),
        "cohort": str(args.cohort),
        "studies": len(studies),
        "abnormal": sum(s.abnormal for s in studies),
        "failed": failed,
        "preprocess_s": round(preprocess_s, 1),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
