"""NIfTI in and out: research input folders and the continuous maps the app writes."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from cs3f.io.outputs import atomic_path
from cs3f.volume import Volume

__all__ = [
    "NIFTI_SUFFIXES",
    "InputError",
    "find_nifti",
    "input_format",
    "load_nifti",
    "save_nifti",
    "subject_name",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def subject_name(path: Path) -> str:
    """``sub-01.nii.gz`` -> ``sub-01``."""
    name = Path(path).name
    return next(name[: -len(s)] for s in NIFTI_SUFFIXES if name.endswith(s))


def find_nifti(folder: Path) -> list[Path]:
    """NIfTI files directly in ``folder`` (one volume per subject), sorted by name."""
    return sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES)
    )


class InputError(ValueError):
    """The input folder cannot be screened as it is (the message says why)."""


def _is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` after the 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def input_format(folder: Path) -> str:
    """``"nifti"`` when the folder holds NIfTI volumes (directly in it), else ``"dicom"``.

    Raises:
        InputError: the folder holds NIfTI volumes and DICOM files both; screening either kind
            alone would silently drop the studies of the other.
    """
    volumes = find_nifti(folder)
    if not volumes:
        return "dicom"
    named = set(volumes)
    dicom = next(
        (p for p in sorted(Path(folder).rglob("*")) if p not in named and _is_dicom_file(p)),
        None,
    )
    if dicom is not None:
        raise InputError(
            f"the input holds {len(volumes)} NIfTI volume(s) and DICOM files "
            f"(e.g. {dicom.relative_to(folder)}); give a folder of one kind"
        )
    return "nifti"


def load_nifti(path: Path) -> Volume:
    """A 3D NIfTI as a float32 Volume (a trailing singleton 4th axis is dropped).

    Raises:
        ValueError: the image is not 3D.
    """
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    return Volume(np.asarray(data, dtype=np.float32), image.affine)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``array`` on ``affine`` to ``path`` (.nii or .nii.gz) atomically and reproducibly."""
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    data = image.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)
