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

__all__ = ["Volume", "resample", "spacing"]


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
