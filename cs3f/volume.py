"""A 3D image with its geometry, and resampling between grids.

Convention used everywhere in cs3f: ``array[i, j, k]`` with a 4x4 ``affine`` that maps the voxel
index ``(i, j, k, 1)`` to RAS+ world coordinates in mm (the NIfTI convention). For a DICOM series
``i`` runs along a row (the column index), ``j`` down the columns (the row index) and ``k`` through
the slices, so a DICOM stack (slices, rows, cols) is ``array.transpose(2, 1, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Volume", "aligned_grid", "index_box_world", "resample", "spacing"]


@dataclass
class Volume:
    """``array`` (I, J, K) with ``affine`` (4, 4) voxel -> RAS mm."""

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a volume is 3D, got shape {self.array.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4) or abs(np.linalg.det(self.affine[:3, :3])) < 1e-9:
            raise ValueError("affine must be an invertible 4x4 matrix")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)


def spacing(affine: np.ndarray) -> np.ndarray:
    """(3,) voxel size in mm along i, j, k."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def index_box_world(
    low: np.ndarray, high: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) RAS mm corners of the world box around the index box ``low``..``high``
    (inclusive voxel indices) under ``affine``."""
    corners = np.array(
        [
            [a, b, c, 1.0]
            for a in (low[0], high[0])
            for b in (low[1], high[1])
            for c in (low[2], high[2])
        ]
    )
    world = (np.asarray(affine) @ corners.T).T[:, :3]
    return world.min(axis=0), world.max(axis=0)


def aligned_grid(
    shape: tuple[int, int, int], affine: np.ndarray, step_mm: float = 1.0
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The RAS-aligned grid of ``step_mm`` voxels that covers every voxel centre of a volume.

    This is "reorient to canonical and resample to isotropic" in one grid: axis i runs to the
    patient's right (+x), j anteriorly (+y), k superiorly (+z), whatever the acquisition.
    Returns (shape, affine).
    """
    low, high = index_box_world(np.zeros(3), np.array(shape) - 1, affine)
    out_shape = tuple(int(n) for n in np.floor((high - low) / step_mm + 1e-6).astype(int) + 1)
    out_affine = np.diag([step_mm, step_mm, step_mm, 1.0])
    out_affine[:3, 3] = low
    return out_shape, out_affine


def resample(
    array: np.ndarray,
    affine: np.ndarray,
    out_shape: tuple[int, int, int],
    out_affine: np.ndarray,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Values of ``array`` (on ``affine``) at the voxel centres of the grid (out_shape, out_affine).

    ``order`` 0 = nearest, 1 = trilinear. Points outside the input get ``cval``. Returns float32
    for order > 0, the input dtype for order 0.
    """
    out_to_in = np.linalg.inv(affine) @ out_affine
    source = array if order == 0 else np.asarray(array, dtype=np.float32)
    return ndimage.affine_transform(
        source,
        out_to_in[:3, :3],
        offset=out_to_in[:3, 3],
        output_shape=tuple(out_shape),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )
