"""One DICOM series -> :class:`~cs3f.volume.Volume` with exact geometry.

A series is either single-frame instances (one slice each) or one multi-frame instance (Enhanced
MR/CT, Legacy Converted Enhanced: the frames' geometry in its functional groups).

Single-frame: the slices are sorted along the slice normal; the affine is built from
ImageOrientationPatient, ImagePositionPatient and PixelSpacing (row spacing first, as the standard
says). Multi-frame: highdicom reads the volume from each frame's PlanePositionSequence,
PlaneOrientationSequence and PixelMeasuresSequence (per-frame, else shared functional groups) and
rescales with PixelValueTransformationSequence; its slices are put in the single-frame order. Both
are converted from DICOM LPS to RAS. Geometry that a single affine cannot describe (mixed
orientations, uneven slice gaps, missing positions) is refused with a :class:`GeometryError`
naming the problem.

Instances may be headers whose pixel data was left on disk (read with pydicom's ``defer_size``,
as the app's intake does): their pixels are then read from their files for the conversion only,
so the datasets a caller keeps never hold pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_rescale

from cs3f.volume import Volume

__all__ = [
    "GeometryError",
    "PixelError",
    "frame_order",
    "number_of_frames",
    "series_volume",
    "shallow_copy",
    "slice_count",
    "sort_slices",
    "to_source_order",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MIN_SLICES = 8
TOLERANCE_MM = 0.01
FRAME_GEOMETRY = ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence")
"""The functional groups that place a frame; each frame needs all three, its own or shared."""


class GeometryError(ValueError):
    """The series cannot be represented as one regular 3D grid."""


class PixelError(ValueError):
    """The series' pixels are not one grey value per voxel on one scale."""


def shallow_copy(ds: Dataset) -> Dataset:
    """A dataset with its own element dict holding ``ds``'s elements (and ``file_meta``): adding
    or removing elements leaves ``ds`` as it is (``Dataset(ds)`` would share the dict). Setting
    an element that both hold still changes both: pop it first."""
    copy = Dataset(dict(ds.items()))
    if "file_meta" in ds.__dict__:
        copy.file_meta = ds.file_meta
    return copy


def number_of_frames(ds: Dataset) -> int:
    """Frames in one instance (1 for a single-frame one)."""
    return int(getattr(ds, "NumberOfFrames", 1) or 1)


def slice_count(datasets: Sequence[Dataset]) -> int:
    """Slices of the volume the series makes: its instances, or the frames of a multi-frame one."""
    return sum(number_of_frames(ds) for ds in datasets)


def _check_count(count: int, what: str) -> None:
    if count < MIN_SLICES:
        raise GeometryError(f"{count} {what}; a volume needs at least {MIN_SLICES}")


def _normal(cosines: np.ndarray) -> np.ndarray:
    """(3,) slice normal (row cosine x column cosine) of a (6,) ImageOrientationPatient."""
    return np.cross(cosines[:3], cosines[3:])


def _orientation(ds: Dataset) -> np.ndarray:
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
        raise GeometryError("an instance lacks ImageOrientationPatient or ImagePositionPatient")
    return np.asarray(ds.ImageOrientationPatient, dtype=np.float64)


def sort_slices(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The single-frame instances ordered by position along the slice normal (increasing)."""
    _check_count(len(datasets), "slices")
    first = _orientation(datasets[0])
    for ds in datasets:
        if np.abs(_orientation(ds) - first).max() > 1e-4:
            raise GeometryError("slices have different ImageOrientationPatient")
        if (ds.Rows, ds.Columns) != (datasets[0].Rows, datasets[0].Columns):
            raise GeometryError("slices have different Rows/Columns")
    normal = _normal(first)
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


def _in_full(ds: Dataset) -> Dataset:
    """``ds``; or, where its pixel data is still on disk (deferred), the instance read in full
    from its file, for one conversion, leaving ``ds`` without pixels."""
    pixels = ds.get_item("PixelData", keep_deferred=True)
    filename = getattr(ds, "filename", None)
    if pixels is None or pixels.value is not None or not isinstance(filename, str):
        return ds
    return dcmread(filename)


def _single_frame_stack(slices: Sequence[Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """(slices, rows, cols) float32 modality values (rescale applied) and the LPS affine."""
    affine = _affine(slices)
    stack = np.empty((len(slices), slices[0].Rows, slices[0].Columns), dtype=np.float32)
    for plane, ds in zip(stack, slices):
        plane[:] = apply_rescale(_in_full(ds).pixel_array, ds)
    return stack, affine


def _frame_items(ds: Dataset, keyword: str) -> list[Dataset | None]:
    """The item of functional group ``keyword`` for each frame: its own, else the shared one."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or [Dataset()] * number_of_frames(ds)
    return [((own if keyword in own else shared).get(keyword) or [None])[0] for own in per_frame]


def _multiframe_instance(datasets: Sequence[Dataset]) -> list[Dataset]:
    """``datasets`` if it is one multi-frame instance whose every frame is placed in space.

    Raises:
        GeometryError: several instances, too few frames, or frames without a position,
            orientation or pixel spacing (named).
    """
    if len(datasets) != 1:
        raise GeometryError(
            f"{len(datasets)} instances, some multi-frame: a series is read as single-frame "
            "instances or as one multi-frame instance"
        )
    ds = datasets[0]
    _check_count(number_of_frames(ds), "frames")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != number_of_frames(ds):
        raise GeometryError(
            f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for "
            f"{number_of_frames(ds)} frames"
        )
    missing = [k for k in FRAME_GEOMETRY if any(item is None for item in _frame_items(ds, k))]
    if missing:
        raise GeometryError(
            f"the multi-frame instance has no {', '.join(missing)} for its frames (neither "
            "per-frame nor shared functional groups): they cannot be placed in space"
        )
    return list(datasets)


def _multiframe_stack(slices: Sequence[Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """(slices, rows, cols) float32 modality values of the one multi-frame instance in
    ``slices`` (PixelValueTransformationSequence applied, no real-world value map) and the LPS
    affine for (column, row, slice), slices in :func:`frame_order`."""
    full = shallow_copy(_in_full(slices[0]))
    image = hd.Image.from_dataset(full, copy=False)  # it re-classes the copy
    try:
        volume = image.get_volume(
            dtype=np.float32,
            apply_real_world_transform=False,
            apply_voi_transform=False,
            apply_presentation_lut=False,  # MONOCHROME1 is inverted as for single-frame
            apply_palette_color_lut=False,
            apply_icc_profile=False,
        )
    except RuntimeError as exc:  # highdicom names the geometry it could not stack
        raise GeometryError(f"the frames do not form one regular grid: {exc}") from exc
    stack, affine = volume.array, volume.affine[:, [2, 1, 0, 3]]  # (slice, row, col) -> ours
    if np.dot(np.cross(affine[:3, 0], affine[:3, 1]), affine[:3, 2]) < 0:
        affine[:3, 3] += (len(stack) - 1) * affine[:3, 2]  # slices along the normal, increasing
        affine[:3, 2] *= -1
        stack = stack[::-1]
    return stack, affine


def frame_order(ds: Dataset) -> np.ndarray:
    """(frames,) zero-based frame indices of a multi-frame instance in slice order: by position
    along the slice normal (increasing), as :func:`series_volume` stacks them."""
    cosines = np.asarray(_frame_items(ds, "PlaneOrientationSequence")[0].ImageOrientationPatient)
    positions = [item.ImagePositionPatient for item in _frame_items(ds, "PlanePositionSequence")]
    return np.argsort(np.asarray(positions, dtype=np.float64) @ _normal(cosines), kind="stable")


def to_source_order(slices: Sequence[Dataset], stack: np.ndarray) -> np.ndarray:
    """``stack`` (slices, ...) in slice order -> in the source's order: the instances ``slices``
    as :func:`series_volume` returns them, or the frames of one multi-frame instance."""
    if len(slices) != 1 or number_of_frames(slices[0]) == 1:
        return stack
    ordered = np.empty_like(stack)
    ordered[frame_order(slices[0])] = stack
    return ordered


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
    """The series as a Volume (columns, rows, slices) in RAS, and its instances in slice order
    (for one multi-frame instance: that instance; :func:`frame_order` orders its frames).
    MONOCHROME1 (low values shown bright) is inverted over the whole volume, so that high
    values are bright as in MONOCHROME2 and every slice keeps the same scale.

    Raises:
        GeometryError: too few slices, mixed orientation or size, uneven spacing, frames
            without geometry.
        PixelError: colour images, or mixed photometric interpretations.
    """
    if any(number_of_frames(ds) > 1 for ds in datasets):
        slices, read = _multiframe_instance(datasets), _multiframe_stack
    else:
        slices, read = sort_slices(datasets), _single_frame_stack
    photometric = _check_pixels(slices)
    stack, affine = read(slices)
    if photometric == "MONOCHROME1":
        stack = stack.max() + stack.min() - stack
    return Volume(np.ascontiguousarray(stack.transpose(2, 1, 0)), LPS_TO_RAS @ affine), slices
