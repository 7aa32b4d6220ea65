"""Synthetic screening cohorts from real brains, written as DICOM with known truth.

    python -m cs3f.cohort --out DIR --normal N --abnormal M --seed S [--ms FOLDER] [--sizes ...]

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
masks on the source grid). The same seed and sources give the same pixels, geometry and UIDs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cs3f.dicom_volume import LPS_TO_RAS
from cs3f.evaluate import SIZE_CLASSES
from cs3f.nifti_io import load_nifti, save_nifti
from cs3f.outputs import atomic_path, write_text
from cs3f.volume import resample

__all__ = [
    "Brain",
    "Donor",
    "Sources",
    "Subject",
    "load_sources",
    "make_cohort",
    "make_subject",
    "write_series",
]

ORIENTATIONS = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


SHARED_MS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nifti" / "ms"
COLIN27 = Path("/usr/share/mricron/templates/ch2bet.nii.gz")  # Debian mricron-data
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
# lesion volumes (mm^3) drawn per size class of the evaluator (SIZE_CLASSES), inside its bounds
LESION_MM3 = {
    "small": (60.0, 99.0),
    "medium": (150.0, 900.0),
    "large": (1300.0, 4800.0),
    "xlarge": (6000.0, 80000.0),
}
LESION_KINDS = ("hyper", "hypo", "ms")
DONOR_CLASSES = ("small", "medium", "large")  # MS donors have no single lesion over 5 ml
MAX_LESION_DRAWS = 10


@dataclass(frozen=True)
class Brain:
    """A real skull-stripped T1 brain on the MNI152 2 mm grid: ``image`` scaled so that the brain's
    99th percentile is 1, ``mask`` its brain (bool), ``size`` its linear size relative to the
    MNI152 brain (cube root of the mask volumes' ratio)."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    size: float


@dataclass(frozen=True)
class Donor:
    """Real MS lesions on the same grid: ``ratio`` is the donor's T1 over its own surrounding
    tissue (1 outside lesions), ``labels`` the 18-connected lesion components."""

    name: str
    ratio: np.ndarray
    labels: np.ndarray


@dataclass
class Subject:
    """A synthetic subject on its own scanner grid: ``image``, ``lesions`` and ``brain`` (I, J, K),
    ``affine`` voxel -> RAS mm, and how it was made (``details``)."""

    image: np.ndarray
    lesions: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    details: dict


@dataclass(frozen=True)
class Sources:
    """What subjects are built from: host brains, MS lesion donors, the grid."""

    brains: tuple[Brain, ...]
    donors: tuple[Donor, ...]
    affine: np.ndarray


def _on_grid(path: Path, shape, affine, order: int) -> np.ndarray:
    volume = load_nifti(path)
    return resample(volume.array, volume.affine, shape, affine, order=order)


def _scaled(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (image / np.percentile(image[mask], 99) * mask).astype(np.float32)


def load_sources(ms_folder: Path | None = None) -> Sources:
    """The individual brains: Colin27 when Debian ``mricron-data`` is installed, and the MS
    subjects ``ms_folder/<subject>/{T1_mni,lesion_gt_mni}.nii.gz`` (when given and present) with
    their lesions in-painted; those MS lesions are also the donors. Only when there is no
    individual at all, nilearn's MNI152 2009 population template is the one host."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=2)
    shape, affine = template.shape, template.affine
    mni_mask = load_mni152_brain_mask(resolution=2).get_fdata() > 0
    brains, donors = [], []

    def brain(name: str, image: np.ndarray) -> Brain:
        """The filled foreground above 5 % of the maximum is the brain."""
        mask = ndimage.binary_fill_holes(image > 0.05 * image.max())
        return Brain(name, _scaled(image, mask), mask, (mask.sum() / mni_mask.sum()) ** (1 / 3))

    if COLIN27.is_file():
        brains.append(brain("colin27", _on_grid(COLIN27, shape, affine, 1)))
    for folder in (
        sorted(Path(ms_folder).iterdir()) if ms_folder and Path(ms_folder).is_dir() else []
    ):
        t1, lesion = folder / "T1_mni.nii.gz", folder / "lesion_gt_mni.nii.gz"
        if t1.is_file() and lesion.is_file():
            donor, healed = _donor(
                folder.name,
                _on_grid(t1, shape, affine, 1),
                _on_grid(lesion, shape, affine, 1) > 0.5,
            )
            donors.append(donor)
            brains.append(brain(folder.name, healed))
    if not brains:
        brains.append(Brain("mni152", _scaled(template.get_fdata(), mni_mask), mni_mask, 1.0))
    return Sources(tuple(brains), tuple(donors), affine)


def _donor(name: str, t1: np.ndarray, lesions: np.ndarray) -> tuple[Donor, np.ndarray]:
    """The lesions' intensity relative to the tissue around them (normalised convolution), and
    the T1 with its lesions replaced by that surrounding tissue (a lesion-free brain)."""
    tissue = (t1 > 0) & ~ndimage.binary_dilation(lesions)
    weight = ndimage.gaussian_filter(tissue.astype(np.float32), 2.0)
    around = ndimage.gaussian_filter(t1 * tissue, 2.0) / np.maximum(weight, 1e-3)
    inside = lesions & (weight > 0.05)
    ratio = np.where(inside, t1 / np.maximum(around, 1e-6), 1.0)
    labels, _ = ndimage.label(lesions, ndimage.generate_binary_structure(3, 2))
    healed = np.where(ndimage.binary_dilation(lesions) & (t1 > 0), around, t1)
    return Donor(name, np.clip(ratio, 0.2, 3.0).astype(np.float32), labels), healed


def _smooth_field(rng, shape, scale, sigma) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma) * scale / 0.05


def _rotation(rng, degrees: float) -> np.ndarray:
    angles = rng.uniform(-degrees, degrees, 3)
    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix()


def _blob(rng, brain: np.ndarray, size: str, voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """An irregular textured blob of ``size`` class: (profile with a soft edge, its extent)."""
    low, high = LESION_MM3[size]
    volume = np.exp(rng.uniform(np.log(low), np.log(high)))
    # three overlapping lobes of this radius cover about 1.9 spheres: 0.81^3 * 1.9 = 1
    radius = 0.81 * (3 * volume / (4 * np.pi)) ** (1 / 3) / voxel_mm
    inner = np.argwhere(ndimage.binary_erosion(brain, iterations=max(3, int(radius) + 2)))
    centre = inner[rng.integers(len(inner))]
    grid = np.indices(brain.shape).transpose(1, 2, 3, 0).astype(np.float32)
    lobes = centre + rng.normal(0, radius / 3, (3, 3))
    distance = np.min([np.linalg.norm(grid - lobe, axis=-1) for lobe in lobes], axis=0)
    texture = 1 + 0.3 * ndimage.gaussian_filter(rng.standard_normal(brain.shape), 1.0) / 0.2
    return np.clip(radius - distance + 0.5, 0, 1) * texture, distance < radius


def _lesions(
    rng,
    sources: Sources,
    brain: np.ndarray,
    count: int,
    sizes: Sequence[str],
    voxel_mm: float,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(multiplicative lesion profile on the grid (0 = unchanged), the lesion mask, what was
    planted).

    Kinds: "hyper" / "hypo" synthetic blobs (intensity x 1.5-1.9 or x 0.1-0.5 at the core), and
    "ms": a real lesion component of a donor, at its own MNI position, with its own intensity
    relative to its surroundings (never xlarge: no single MS lesion is that big). Sizes are drawn
    per lesion from ``sizes`` (classes of the evaluator), for their volume in the subject, where a
    template voxel measures ``voxel_mm``.
    """
    profile, extent = np.zeros(brain.shape, dtype=np.float32), np.zeros(brain.shape, bool)
    planted = []
    for _ in range(count):
        size = str(rng.choice(list(sizes)))
        ms = bool(sources.donors) and size in DONOR_CLASSES
        kind = str(rng.choice(LESION_KINDS if ms else LESION_KINDS[:2]))
        if kind == "ms":
            donor, label = _donor_lesion(rng, sources.donors, size, voxel_mm**3)
            inside = donor.labels == label
            change = np.where(inside, donor.ratio - 1, 0)
            size = f"{donor.name}, {inside.sum() * voxel_mm**3:.0f} mm^3"
        else:
            shape, inside = _blob(rng, brain, size, voxel_mm)
            change = (1 if kind == "hyper" else -1) * rng.uniform(0.5, 0.9) * shape
        profile = np.where(np.abs(change) > np.abs(profile), change, profile)
        extent |= inside
        planted.append(f"{kind} ({size})")
    return profile * brain, extent & brain, planted


def _donor_lesion(rng, donors: Sequence[Donor], size: str, voxel_mm3: float) -> tuple[Donor, int]:
    """A random donor lesion of the ``size`` class (or, where the donors have none of that class,
    of any class), never one under ``LESION_MM3["small"][0]``: a smaller one may vanish on the
    subject's grid."""
    low, high = SIZE_CLASSES[size]
    candidates, fallback = [], []
    for donor in donors:
        volumes = np.bincount(donor.labels.ravel())[1:] * voxel_mm3
        for label in np.flatnonzero(volumes >= LESION_MM3["small"][0]) + 1:
            fallback.append((donor, int(label)))
            if low <= volumes[label - 1] < high:
                candidates.append((donor, int(label)))
    chosen = candidates or fallback
    return chosen[rng.integers(len(chosen))]


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


def write_series(
    image: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    tags: dict,
    uid_seed: str,
    descending: bool = False,
) -> list[Path]:
    """Write ``image`` (I, J, K, values >= 0) on ``affine`` (RAS) as single-frame MR instances.

    Instances are numbered along K, or against it when ``descending`` (the scanner acquired the
    slices the other way); the geometry is the same either way.

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
        number = image.shape[2] - k if descending else k + 1
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
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, number
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
        path = folder / f"{number:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def make_cohort(
    out: Path,
    n_normal: int,
    n_abnormal: int,
    seed: int,
    ms_folder: Path | None = None,
    sizes: Sequence[str] = tuple(LESION_MM3),
) -> list[dict]:
    """Write ``n_normal + n_abnormal`` studies and their truth under ``out``; returns the labels.
    Lesions are drawn from the size classes ``sizes``.

    Study order is shuffled by the seed so abnormal studies are not all at the end. The same
    seed and the same sources (see :func:`load_sources`) give the same files.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    sources = load_sources(ms_folder)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cs3f.cohort", description=__doc__.split("\n")[0]
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
    labels = make_cohort(args.out, args.normal, args.abnormal, args.seed, args.ms, args.sizes)
    print(
        f"wrote {len(labels)} studies to {args.out / 'studies'} and truth to {args.out / 'truth'}"
    )


if __name__ == "__main__":
    main()
