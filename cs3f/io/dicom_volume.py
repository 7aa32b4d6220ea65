"""One DICOM series (single-frame instances) -> :class:`~cs3f.volume.Volume` with exact geometry.

The slices are sorted along the slice normal; the affine is built from ImageOrientationPatient,
ImagePositionPatient and PixelSpacing (row spacing first, as the standard says) and converted from
DICOM LPS to RAS. Geometry that a single affine cannot describe (mixed orientations, uneven slice
gaps, missing positions) is refused with a :class:`GeometryError` naming the problem.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_rescale

from cs3f.volume import Volume

__all__ = ["GeometryError", "PixelError", "series_volume", "sort_slices"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MIN_SLICES = 8
TOLERANCE_MM = 0.01


class GeometryError(ValueError):
    """The series cannot be represented as one regular 3D grid."""


class PixelError(ValueError):
    """The series' pixels are not one grey value per voxel on one scale."""


def _orientation(ds: Dataset) -> np.ndarray:
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
        raise GeometryError("an instance lacks ImageOrientationPatient or ImagePositionPatient")
    return np.asarray(ds.ImageOrientationPatient, dtype=np.float64)


def sort_slices(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The instances ordered by position along the slice normal (increasing)."""
    if any(int(getattr(ds, "NumberOfFrames", 1) or 1) != 1 for ds in datasets):
        raise GeometryError("multi-frame instances (e.g. Enhanced MR/CT) are not supported yet")
    if len(datasets) < MIN_SLICES:
        raise GeometryError(f"{len(datasets)} slices; a volume needs at least {MIN_SLICES}")
    first = _orientation(datasets[0])
    for ds in datasets:
        if np.abs(_orientation(ds) - first).max() > 1e-4:
            raise GeometryError("slices have different ImageOrientationPatient")
        if (ds.Rows, ds.Columns) != (datasets[0].Rows, datasets[0].Columns):
            raise GeometryError("slices have different Rows/Columns")
    normal = np.cross(first[:3], first[3:])
    return sorted(datasets, key=lambda ds: float(np.dot(normal, ds.ImagePositionPatient)))


def _affine(slices: Sequence[Dataset]) -> np.ndarray:
    """(4, 4) LPS affine for the index order (column, row, slice)."""
    cosines = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    row_spacing, col_spacing = (float(v) for v in slices[0].PixelSpacing)
    positions = np.array([ds.ImagePositionPatient for ds in slices], dtype=np.float64)
    steps = np.diff(positions, axis=0)
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    if np.linalg.norm(step) < TOLERANCE_MM:
        raise GeometryError("slices share one position (a time series or duplicates?)")
    if np.abs(steps - step).max() > max(TOLERANCE_MM, 0.01 * np.linalg.norm(step)):
        raise GeometryError("uneven slice spacing or a missing slice")
    affine = np.eye(4)
    affine[:3, 0] = cosines[:3] * col_spacing  # along a row: next column
    affine[:3, 1] = cosines[3:] * row_spacing  # down a column: next row
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return affine


def _pixels(ds: Dataset) -> np.ndarray:
    """(rows, cols) float32 modality values (rescale applied)."""
    return apply_rescale(ds.pixel_array, ds).astype(np.float32)


def _check_pixels(slices: Sequence[Dataset]) -> str:
    """The series' photometric interpretation, once every slice is one grey value per pixel.

    Raises:
        PixelError: colour samples, or slices that disagree on how to read their values.
    """
    samples = {int(getattr(ds, "SamplesPerPixel", 1) or 1) for ds in slices}
    photometric = {str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")) for ds in slices}
    if samples != {1}:
        raise PixelError(
            f"colour images ({max(samples)} samples per pixel, {min(photometric)}) cannot "
            "be screened: the method needs one grey value per voxel"
        )
    if len(photometric) > 1 or not photometric <= {"MONOCHROME1", "MONOCHROME2"}:
        raise PixelError(
            f"slices must all be MONOCHROME1 or MONOCHROME2, got {sorted(photometric)}"
        )
    return photometric.pop()


def series_volume(datasets: Sequence[Dataset]) -> tuple[Volume, list[Dataset]]:
    """The series as a Volume (columns, rows, slices) in RAS, and its instances in slice order.
    MONOCHROME1 (low values shown bright) is inverted over the whole volume, so that high
    values are bright as in MONOCHROME2 and every slice keeps the same scale.

    Raises:
        GeometryError: too few slices, mixed orientation or size, uneven spacing.
        PixelError: colour images, or mixed photometric interpretations.
    """
    slices = sort_slices(datasets)
    affine = LPS_TO_RAS @ _affine(slices)
    photometric = _check_pixels(slices)
    stack = np.stack([_pixels(ds) for ds in slices])  # (slices, rows, cols)
    if photometric == "MONOCHROME1":
        stack = stack.max() + stack.min() - stack
    return Volume(np.ascontiguousarray(stack.transpose(2, 1, 0)), affine), slices
