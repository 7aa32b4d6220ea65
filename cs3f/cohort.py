"""Synthetic screening cohorts from a real brain template, written as DICOM with known truth.

    python -m cs3f.cohort --out DIR --normal N --abnormal M --seed S

Each subject is nilearn's MNI152 2009 T1 template (2 mm) seen through its own random smooth
deformation, affine jitter, bias field, contrast curve and noise; abnormal subjects get one to
three irregular textured blobs, hyper- or hypo-intense, with soft edges. Every study is written as
one MR series of single-frame DICOM instances with its own slice orientation (axial, coronal or
sagittal, slightly oblique) and slice direction, so the app's geometry path is exercised.

Outputs: ``DIR/studies/<n>/<instance>.dcm`` and the truth in the evaluator's layout,
``DIR/truth/labels.csv`` (study_instance_uid, abnormal) and
``DIR/truth/masks/<StudyInstanceUID>.nii.gz`` (lesion masks on the source grid).
The same seed gives the same pixels, geometry and UIDs.
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy import ndimage

from cs3f.dicom_volume import LPS_TO_RAS
from cs3f.nifti_io import save_nifti
from cs3f.outputs import atomic_path, write_text
from cs3f.volume import resample

__all__ = ["Subject", "make_cohort", "make_subject", "write_series"]

ORIENTATIONS = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


@dataclass
class Subject:
    """A synthetic subject on its own scanner grid: ``image`` and ``lesions`` (I, J, K), ``affine``
    voxel -> RAS mm."""

    image: np.ndarray
    lesions: np.ndarray
    affine: np.ndarray
    orientation: str


def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    image = load_mni152_template(resolution=2)
    brain = load_mni152_brain_mask(resolution=2)
    return image.get_fdata().astype(np.float32), brain.get_fdata() > 0, image.affine


def _smooth_field(rng, shape, scale, sigma) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma) * scale / 0.05


def _rotation(rng, degrees: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-degrees, degrees, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _lesions(rng, brain: np.ndarray, count: int) -> np.ndarray:
    """Signed lesion profile on the template grid: 0 outside, soft +/- blobs inside the brain."""
    profile = np.zeros(brain.shape, dtype=np.float32)
    inner = np.argwhere(ndimage.binary_erosion(brain, iterations=6))
    grid = np.indices(brain.shape).transpose(1, 2, 3, 0).astype(np.float32)
    for _ in range(count):
        centre = inner[rng.integers(len(inner))]
        radius = rng.uniform(2.0, 6.0)  # voxels of 2 mm: about 30 to 900 mm^3
        lobes = centre + rng.normal(0, radius / 2, (3, 3))
        distance = np.min([np.linalg.norm(grid - lobe, axis=-1) for lobe in lobes], axis=0)
        texture = 1 + 0.3 * ndimage.gaussian_filter(rng.standard_normal(brain.shape), 1.0) / 0.2
        blob = np.clip((radius - distance) / 1.5 + 0.5, 0, 1) * texture
        sign = rng.choice([-1.0, 1.0])
        profile = np.where(
            np.abs(blob) > np.abs(profile), sign * rng.uniform(0.5, 0.9) * blob, profile
        )
    return profile * brain


def make_subject(rng: np.random.Generator, abnormal: bool, template=None) -> Subject:
    """One subject on a random scanner grid (about 2 mm voxels)."""
    image, brain, t_affine = template or _template()
    profile = _lesions(rng, brain, int(rng.integers(1, 4))) if abnormal else np.zeros_like(image)
    lesioned = image * (1 + profile)
    # anatomy: subject(x) = template(jitter(x) + warp(x)), in template voxels
    coarse = tuple(max(2, s // 12) for s in image.shape)
    warp = [
        ndimage.zoom(_smooth_field(rng, coarse, 1.0, 1.0), np.divide(image.shape, coarse), order=1)
        for _ in range(3)
    ]
    jitter = np.eye(4)
    jitter[:3, :3] = _rotation(rng, 6) * rng.uniform(0.93, 1.07)
    jitter[:3, 3] = rng.uniform(-6, 6, 3)
    # scanner grid: orientation, slight obliquity, voxel size, slice direction
    orientation = str(rng.choice(list(ORIENTATIONS)))
    axes = np.eye(3)[:, list(ORIENTATIONS[orientation])] * np.array([1, -1, rng.choice([-1, 1])])
    axes = _rotation(rng, 4) @ axes
    step = np.array([rng.uniform(1.8, 2.2)] * 2 + [rng.uniform(2.0, 3.0)])
    centre = t_affine[:3, :3] @ (np.array(image.shape) / 2) + t_affine[:3, 3]
    extent = np.abs(axes.T @ (t_affine[:3, :3] * np.array(image.shape))).sum(axis=1) + 20
    shape = tuple(int(n) for n in np.ceil(extent / step))
    affine = np.eye(4)
    affine[:3, :3] = axes * step
    affine[:3, 3] = centre - affine[:3, :3] @ (np.array(shape) - 1) / 2
    moved_grid = np.indices(image.shape, dtype=np.float32) + np.stack(warp)

    def sample(values: np.ndarray) -> np.ndarray:
        """Template-grid values -> the subject grid: voxel o shows template point J @ affine @ o."""
        moved = ndimage.map_coordinates(values, moved_grid, order=1)
        return resample(moved, t_affine, shape, jitter @ affine, order=1)

    subject = sample(lesioned)
    lesions = sample((np.abs(profile) > 0.5).astype(np.float32)) > 0.5
    gamma = rng.uniform(0.8, 1.25)
    bias = np.exp(
        ndimage.zoom(_smooth_field(rng, (3, 3, 3), 0.15, 0.7), np.divide(shape, 3), order=1)
    )
    subject = np.clip(subject, 0, None) ** gamma * bias
    subject = subject + rng.normal(0, 0.02, shape) * (subject > 0.02)
    scale = rng.uniform(800, 1600)
    return Subject(
        (np.clip(subject, 0, None) * scale).astype(np.float32), lesions, affine, orientation
    )


def write_series(
    image: np.ndarray, affine: np.ndarray, folder: Path, tags: dict, uid_seed: str
) -> list[Path]:
    """Write ``image`` (I, J, K, values >= 0) on ``affine`` (RAS) as single-frame MR instances.

    ``tags`` sets patient/study attributes (PatientName, PatientID, AccessionNumber, ...).
    UIDs derive from ``uid_seed``, so the same seed writes the same UIDs.
    """
    lps = LPS_TO_RAS @ affine  # the flip is its own inverse: RAS -> LPS
    step = np.linalg.norm(lps[:3, :3], axis=0)
    row_cosine, col_cosine = lps[:3, 0] / step[0], lps[:3, 1] / step[1]
    pixels = np.clip(np.round(image), 0, 65535).astype(np.uint16)
    study_uid = generate_uid(entropy_srcs=[uid_seed, "study"])
    series_uid = generate_uid(entropy_srcs=[uid_seed, "series"])
    frame_uid = generate_uid(entropy_srcs=[uid_seed, "frame"])
    date = datetime.date(2026, 1, 1).strftime("%Y%m%d")
    paths = []
    for k in range(image.shape[2]):
        sop_uid = generate_uid(entropy_srcs=[uid_seed, "instance", str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.ReferringPhysicianName, ds.StudyID = "", "1"
        ds.StudyDescription, ds.SeriesDescription = "Brain MRI (synthetic)", "T1 3D (synthetic)"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, k + 1
        ds.BodyPartExamined = "BRAIN"
        ds.PatientPosition = "HFS"
        ds.Manufacturer = "cs3f synthetic cohort"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "SP", ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 2000, 3, 1
        ds.MagneticFieldStrength = 3
        ds.ImagingFrequency = 123.2
        ds.ImagedNucleus = "1H"
        ds.SliceThickness = f"{step[2]:.4f}"
        ds.PixelSpacing = [f"{step[1]:.6f}", f"{step[0]:.6f}"]  # row spacing, column spacing
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_cosine, *col_cosine)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ [0, 0, k, 1])[:3]]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = image.shape[1], image.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        for key, value in tags.items():
            setattr(ds, key, value)
        path = folder / f"{k + 1:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def make_cohort(out: Path, n_normal: int, n_abnormal: int, seed: int) -> list[dict]:
    """Write ``n_normal + n_abnormal`` studies and their truth under ``out``; returns the labels.

    Study order is shuffled by the seed so abnormal studies are not all at the end.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    template = _template()
    kinds = rng.permutation([False] * n_normal + [True] * n_abnormal)
    labels = []
    for n, abnormal in enumerate(kinds):
        subject = make_subject(np.random.default_rng([seed, n]), bool(abnormal), template)
        folder = out / "studies" / f"{n:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        tags = {
            "PatientName": f"Synthetic^{seed}-{n:03d}",
            "PatientID": f"SYN{seed:03d}{n:03d}",
            "AccessionNumber": f"A{seed:03d}{n:04d}",
        }
        paths = write_series(subject.image, subject.affine, folder, tags, f"cs3f-cohort-{seed}-{n}")
        uid = dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
        save_nifti(
            subject.lesions.astype(np.uint8),
            subject.affine,
            out / "truth" / "masks" / f"{uid}.nii.gz",
        )
        labels.append(
            {
                "study_instance_uid": uid,
                "abnormal": int(abnormal),
                "orientation": subject.orientation,
                "lesion_ml": round(
                    float(subject.lesions.sum() * abs(np.linalg.det(subject.affine[:3, :3])))
                    / 1000,
                    2,
                ),
            }
        )
    lines = ["study_instance_uid,abnormal,orientation,lesion_ml"]
    lines += [
        f"{r['study_instance_uid']},{r['abnormal']},{r['orientation']},{r['lesion_ml']}"
        for r in labels
    ]
    write_text(out / "truth" / "labels.csv", "\n".join(lines) + "\n")
    return labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cs3f.cohort", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--normal", type=int, default=10)
    parser.add_argument("--abnormal", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="do nothing when DIR already holds a cohort (truth/labels.csv)",
    )
    args = parser.parse_args(argv)
    if args.reuse and (args.out / "truth" / "labels.csv").is_file():
        print(f"reusing the cohort in {args.out}")
        return
    if (args.out / "studies").exists() and any((args.out / "studies").iterdir()):
        parser.error(f"{args.out / 'studies'} is not empty; choose another --out or remove it")
    labels = make_cohort(args.out, args.normal, args.abnormal, args.seed)
    print(
        f"wrote {len(labels)} studies to {args.out / 'studies'} and truth to {args.out / 'truth'}"
    )


if __name__ == "__main__":
    main()
