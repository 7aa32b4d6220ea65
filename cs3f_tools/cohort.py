"""Synthetic screening cohorts from real brains, written as DICOM with known truth.

    python -m cs3f_tools.cohort --out DIR --normal N --abnormal M --seed S [--ms FOLDER] [--sizes ...]
                                [--packaged-only] [--reuse]

Each subject is a real skull-stripped T1 brain of one *individual* on the MNI152 2 mm grid, seen
through its own random smooth deformation, affine jitter, bias field, contrast curve and noise.
The individuals are Colin27 (Debian ``mricron-data``) and the MS subjects of ``--ms`` (by default
``../shared/data/nifti/ms``) with their lesions in-painted from the tissue around them. A
population average (nilearn's MNI152 2009) is used only where no individual is installed: its
deformed copies are smoother than any real brain and near-twins of each other, so mixing it with
individuals makes the patient score measure which base brain a study came from (measured:
16 of the top 17 of 40 studies were Colin27-based, whatever their lesions).

Abnormal subjects get one to three lesions, each of a size class of the evaluator drawn from
``--sizes`` (small < 0.1 ml, medium 0.1-1 ml, large 1-5 ml, xlarge 5 to about 60 ml, tumour and
stroke sized): synthetic hyper- or hypo-intense irregular textured blobs with soft edges, and,
when MS subjects are available, real MS lesions transplanted at their own MNI position with
their own intensity relative to the surrounding tissue. Every study is one MR series of
single-frame DICOM instances with its own patient position (HFS, HFP, HFDL, HFDR, FFS), slice
orientation (axial, coronal or sagittal in the scanner, slightly oblique) and slice order,
so the app's geometry path is exercised.

Outputs: ``DIR/studies/<n>/<instance>.dcm`` and the truth in the evaluator's layout,
``DIR/truth/labels.csv`` (study_instance_uid, abnormal, then brain, position, orientation,
slice_order, lesion_ml, lesions) and ``DIR/truth/masks/<StudyInstanceUID>.nii.gz`` (lesion
masks on the source grid). The same seed and sources give the same files; the builder prints
their SHA-256 (:func:`cohort_digest`). ``--packaged-only`` builds from the MNI152 template alone,
which every install has, so that cohort is the same on every machine (the README's sample).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cs3f.io.nifti_io import save_nifti
from cs3f.io.outputs import write_text
from cs3f.volume import resample
from cs3f_tools.cohort_dicom import write_series
from cs3f_tools.cohort_lesions import LESION_MM3, _lesions
from cs3f_tools.cohort_sources import (
    COLIN27,
    SHARED_MS,
    Brain,
    Donor,
    Sources,
    load_sources,
)

__all__ = [
    "COLIN27",
    "Brain",
    "Donor",
    "Sources",
    "Subject",
    "cohort_digest",
    "load_sources",
    "make_cohort",
    "make_subject",
    "write_series",
]

ORIENTATIONS = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}
POSITIONS = ("HFS", "HFP", "HFDL", "HFDR", "FFS")
# patient position -> rotation taking patient axes (LPS) to the scanner's: supine head first is
# the identity; prone turns the patient 180 degrees about the bore, decubitus 90; feet first
# turns the patient end over end
_TURN = {
    "HFS": ("z", 0),
    "HFP": ("z", 180),
    "HFDL": ("z", 90),
    "HFDR": ("z", -90),
    "FFS": ("y", 180),
}
MAX_LESION_DRAWS = 10


@dataclass
class Subject:
    """A synthetic subject on its own scanner grid: ``image``, ``lesions`` and ``brain`` (I, J, K),
    ``affine`` voxel -> RAS mm, and how it was made (``details``)."""

    image: np.ndarray
    lesions: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    details: dict


def _smooth_field(rng, shape, scale, sigma) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma) * scale / 0.05


def _rotation(rng, degrees: float) -> np.ndarray:
    angles = rng.uniform(-degrees, degrees, 3)
    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix()


def _scanner_axes(rng, position: str, orientation: str) -> np.ndarray:
    """(3, 3) voxel axes in patient RAS: slice planes are set in the scanner, and the patient
    lies in the scanner as ``position`` says."""
    axis, degrees = _TURN[position]
    to_scanner = Rotation.from_euler(axis, degrees, degrees=True).as_matrix()  # LPS and RAS alike
    axes = to_scanner.T @ _rotation(rng, 4) @ np.eye(3)[:, list(ORIENTATIONS[orientation])]
    axes[:, 1] *= -1  # rows run down the image
    axes[:, 2] *= np.sign(np.linalg.det(axes))  # along the slice normal, as DICOM readers order
    return axes


def _scanner_grid(
    rng, position: str, orientation: str, template_shape: tuple, template_affine: np.ndarray
) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, voxel -> RAS affine) of a scanner grid covering the template with a 10 mm margin:
    the patient position and slice orientation, slight obliquity, about 2 mm voxels."""
    axes = _scanner_axes(rng, position, orientation)
    step = np.array([rng.uniform(1.8, 2.2)] * 2 + [rng.uniform(2.0, 3.0)])
    centre = template_affine[:3, :3] @ (np.array(template_shape) / 2) + template_affine[:3, 3]
    extent = np.abs(axes.T @ (template_affine[:3, :3] * np.array(template_shape))).sum(axis=1)
    shape = tuple(int(n) for n in np.ceil((extent + 20) / step))
    affine = np.eye(4)
    affine[:3, :3] = axes * step
    affine[:3, 3] = centre - affine[:3, :3] @ (np.array(shape) - 1) / 2
    return shape, affine


def make_subject(
    rng: np.random.Generator,
    abnormal: bool,
    sources: Sources,
    sizes: Sequence[str] = tuple(LESION_MM3),
    space: str = "scanner",
    host: int | None = None,
) -> Subject:
    """One subject; an abnormal one has lesions of the size classes ``sizes``. Its base brain is
    ``sources.brains[host]``, or one drawn at random when ``host`` is None.

    ``space="scanner"``: on a random scanner grid (about 2 mm voxels, any patient position and
    slice orientation), as a scanner would write it. ``space="atlas"``: on the MNI152 2 mm grid
    itself, as a skull-stripped volume after affine registration would be: only the smooth
    deformation and a residual rigid misalignment (1.5 degrees, 1.5 mm) remain, the brain at the
    template's size (a registration's scale removed). The atlas space is what the detection
    quality gate uses: it skips the minute of registration per study.
    """
    if space not in ("scanner", "atlas"):
        raise ValueError(f"space must be 'scanner' or 'atlas', got {space!r}")
    host = sources.brains[rng.integers(len(sources.brains)) if host is None else host]
    image, brain, t_affine = host.image, host.mask, sources.affine
    # anatomy: subject(x) = template(jitter(x) + warp(x)), in template voxels
    coarse = tuple(max(2, s // 12) for s in image.shape)
    warp = [
        ndimage.zoom(_smooth_field(rng, coarse, 1.0, 1.0), np.divide(image.shape, coarse), order=1)
        for _ in range(3)
    ]
    jitter = np.eye(4)
    if space == "atlas":
        jitter[:3, :3] = _rotation(rng, 1.5) * host.size
        jitter[:3, 3] = rng.uniform(-1.5, 1.5, 3)
        position = orientation = "atlas"
        shape, affine = image.shape, t_affine
    else:
        # real adult brains are about 0.86-1.0 times the MNI152 template linearly; the host
        # already has its own size, which the subject's is drawn around
        jitter[:3, :3] = _rotation(rng, 6) * host.size / rng.uniform(0.86, 1.0)
        jitter[:3, 3] = rng.uniform(-6, 6, 3)
        # scanner grid: patient position, orientation, slight obliquity, voxel size, slice order
        position = str(rng.choice(POSITIONS))
        orientation = str(rng.choice(list(ORIENTATIONS)))
        shape, affine = _scanner_grid(rng, position, orientation, image.shape, t_affine)
    moved_grid = np.indices(image.shape, dtype=np.float32) + np.stack(warp)

    def sample(values: np.ndarray) -> np.ndarray:
        """Template-grid values -> the subject grid: voxel o shows template point J @ affine @ o."""
        moved = ndimage.map_coordinates(values, moved_grid, order=1)
        return resample(moved, t_affine, shape, jitter @ affine, order=1)

    # the jitter scales the template down: a template voxel is this long in the subject
    seen_voxel_mm = float(abs(np.linalg.det(t_affine[:3, :3] @ np.linalg.inv(jitter[:3, :3]))))
    seen_voxel_mm **= 1 / 3
    profile, lesions, planted = np.zeros_like(image), np.zeros(shape, bool), []
    for _ in range(MAX_LESION_DRAWS if abnormal else 0):  # redraw lesions lost to the grid
        profile, lesion_mask, planted = _lesions(
            rng, sources, brain, int(rng.integers(1, 4)), sizes, seen_voxel_mm
        )
        lesions = sample(lesion_mask.astype(np.float32)) > 0.5
        if lesions.any():
            break
    else:
        if abnormal:
            raise RuntimeError(f"no lesion survived on the subject's grid: {planted}")
    subject = sample(image * (1 + profile))
    brain_mask = sample(brain.astype(np.float32)) > 0.5
    gamma = rng.uniform(0.8, 1.25)
    bias = np.exp(
        ndimage.zoom(_smooth_field(rng, (3, 3, 3), 0.15, 0.7), np.divide(shape, 3), order=1)
    )
    subject = np.clip(subject, 0, None) ** gamma * bias
    subject = subject + rng.normal(0, 0.02, shape) * (subject > 0.02)
    scale = rng.uniform(800, 1600)
    details = {"brain": host.name, "position": position, "orientation": orientation}
    details["slice_order"] = str(rng.choice(["ascending", "descending"]))
    details["lesions"] = "; ".join(planted)
    image = np.clip(subject, 0, None) * scale
    if space == "atlas":  # skull-stripped: nothing outside the brain
        image *= brain_mask
    return Subject(image.astype(np.float32), lesions, brain_mask, affine, details)


def make_cohort(
    out: Path,
    n_normal: int,
    n_abnormal: int,
    seed: int,
    ms_folder: Path | None = None,
    sizes: Sequence[str] = tuple(LESION_MM3),
    colin27: Path | None = COLIN27,
) -> list[dict]:
    """Write ``n_normal + n_abnormal`` studies and their truth under ``out``; returns the labels.
    Lesions are drawn from the size classes ``sizes``.

    Study order is shuffled by the seed so abnormal studies are not all at the end. The same
    seed and the same sources (``ms_folder``, ``colin27``: see :func:`load_sources`) give the
    same files.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    sources = load_sources(ms_folder, colin27)
    kinds = rng.permutation([False] * n_normal + [True] * n_abnormal)
    labels = []
    for n, abnormal in enumerate(kinds):
        subject = make_subject(np.random.default_rng([seed, n]), bool(abnormal), sources, sizes)
        folder = out / "studies" / f"{n:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        tags = {
            "PatientName": f"Synthetic^{seed}-{n:03d}",
            "PatientID": f"SYN{seed:03d}{n:03d}",
            "AccessionNumber": f"A{seed:03d}{n:04d}",
            "PatientPosition": subject.details["position"],
        }
        paths = write_series(
            subject.image,
            subject.affine,
            folder,
            tags,
            f"cs3f-cohort-{seed}-{n}",
            descending=subject.details["slice_order"] == "descending",
        )
        uid = dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
        save_nifti(
            subject.lesions.astype(np.uint8),
            subject.affine,
            out / "truth" / "masks" / f"{uid}.nii.gz",
        )
        voxel_ml = abs(np.linalg.det(subject.affine[:3, :3])) / 1000
        labels.append(
            {
                "study_instance_uid": uid,
                "abnormal": int(abnormal),
                **{
                    k: subject.details[k]
                    for k in ("brain", "position", "orientation", "slice_order")
                },
                "lesion_ml": round(float(subject.lesions.sum() * voxel_ml), 2),
                "lesions": subject.details["lesions"],
            }
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(labels[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(labels)
    write_text(out / "truth" / "labels.csv", buffer.getvalue())
    return labels


def cohort_digest(out: Path) -> str:
    """SHA-256 (hex) over every file of the cohort in ``out`` (``studies/`` and ``truth/``):
    relative path and bytes, in sorted path order. Equal digests mean identical cohorts."""
    digest = hashlib.sha256()
    out = Path(out)
    for path in sorted(p for d in ("studies", "truth") for p in (out / d).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(out).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cs3f_tools.cohort", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--normal", type=int, default=10)
    parser.add_argument("--abnormal", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ms",
        type=Path,
        default=SHARED_MS if SHARED_MS.is_dir() else None,
        help="MS subjects (<subject>/T1_mni.nii.gz, lesion_gt_mni.nii.gz) whose real lesions are "
        "transplanted (default: ../shared/data/nifti/ms beside the repository, when present)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=list(LESION_MM3),
        default=list(LESION_MM3),
        help="lesion size classes to draw from (default: all); e.g. --sizes xlarge for "
        "tumour-sized lesions only",
    )
    parser.add_argument(
        "--packaged-only",
        action="store_true",
        help="build every study from nilearn's MNI152 template alone (no Colin27, no MS "
        "subjects), so that the files are byte-identical on every machine; the README's sample",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="do nothing when DIR already holds a cohort (truth/labels.csv)",
    )
    args = parser.parse_args(argv)
    if args.reuse and (args.out / "truth" / "labels.csv").is_file():
        print(f"reusing the cohort in {args.out} (sha256 {cohort_digest(args.out)})")
        return
    if (args.out / "studies").exists() and any((args.out / "studies").iterdir()):
        parser.error(f"{args.out / 'studies'} is not empty; choose another --out or remove it")
    ms, colin27 = (None, None) if args.packaged_only else (args.ms, COLIN27)
    labels = make_cohort(args.out, args.normal, args.abnormal, args.seed, ms, args.sizes, colin27)
    print(
        f"wrote {len(labels)} studies to {args.out / 'studies'} and truth to {args.out / 'truth'}; "
        f"sha256 {cohort_digest(args.out)}"
    )


if __name__ == "__main__":
    main()
