"""Native volume -> standard-space grid (and back): the bounding-box alignment.

Steps: foreground mask on the native grid (Otsu for MR, HU > -500 for CT, largest component,
holes filled); a RAS-aligned target grid of ``size``^3 voxels whose box is the foreground's world
bounding box plus ``margin`` voxels (so each axis is scaled to fit: translation and per-axis scale,
no rotation beyond the canonical reorientation); trilinear resampling; intensities scaled to
[0, 1] by foreground percentiles (MR) or a fixed HU window (CT).

Every step is kept in a :class:`GridTransform`, so a standard-space map goes back onto the
source grid with :meth:`GridTransform.to_source`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cs3f.volume import Volume, resample, spacing

__all__ = ["GridTransform", "StandardiseSettings", "Standardised", "foreground_mask", "standardise"]

INTENSITY_MODES = ("percentile", "window")


@dataclass(frozen=True)
class StandardiseSettings:
    """Attributes:
    size: voxels per side of the cubic standard grid.
    margin: empty voxels kept around the foreground box on each side.
    intensity: ``"percentile"`` (MR) or ``"window"`` (CT, values in HU).
    percentiles: (low, high) foreground percentiles mapped to 0 and 1 in percentile mode.
    window: (low, high) HU mapped to 0 and 1 in window mode.
    """

    size: int = 224
    margin: int = 8
    intensity: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] = (-800.0, 400.0)

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {self.intensity!r}")
        if not 0 <= 2 * self.margin < self.size - 1:
            raise ValueError(f"margin {self.margin} leaves no room in size {self.size}")


@dataclass(frozen=True)
class GridTransform:
    """Two grids in one world: the source series' and the standard one."""

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    target_shape: tuple[int, int, int]
    target_affine: np.ndarray

    def to_target(self, values: np.ndarray, order: int = 1) -> np.ndarray:
        """Source-grid values -> standard grid (float32 for order 1, same dtype for order 0)."""
        return resample(values, self.source_affine, self.target_shape, self.target_affine, order)

    def to_source(self, values: np.ndarray, order: int = 1) -> np.ndarray:
        """Standard-grid values -> the source grid; 0 where the source lies outside the box."""
        return resample(values, self.target_affine, self.source_shape, self.source_affine, order)


@dataclass
class Standardised:
    """``volume`` (size^3 float32 in [0, 1]), ``mask`` (bool, same shape), and how we got there."""

    volume: np.ndarray
    mask: np.ndarray
    transform: GridTransform
    details: dict


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(
        weight_high, 1
    )
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[np.argmax(between)])


def foreground_mask(array: np.ndarray, intensity: str = "percentile") -> np.ndarray:
    """Bool mask of the imaged body: the largest connected component, holes filled.

    MR (``percentile``): Otsu threshold of the non-zero voxels. CT (``window``): HU > -500, with
    holes filled slice by slice along the last axis so the lungs count as inside.
    """
    if intensity == "window":
        mask = array > -500
    else:
        positive = array[array > 0]
        if positive.size == 0:
            return np.zeros(array.shape, dtype=bool)
        mask = array > _otsu(positive)
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    mask = ndimage.binary_closing(mask, iterations=2)
    if intensity == "window":
        for k in range(mask.shape[2]):
            mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return ndimage.binary_fill_holes(mask)


def _target_affine(mask: np.ndarray, affine: np.ndarray, settings: StandardiseSettings):
    index = np.argwhere(mask)
    lo, hi = index.min(axis=0), index.max(axis=0)
    corners = np.array(
        [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    world = (affine @ corners.T).T[:, :3]
    w_lo, w_hi = world.min(axis=0), world.max(axis=0)
    step = np.maximum(w_hi - w_lo, 1.0) / (settings.size - 1 - 2 * settings.margin)
    target = np.diag([*step, 1.0])
    target[:3, 3] = w_lo - settings.margin * step
    return target


def standardise(volume: Volume, settings: StandardiseSettings | None = None) -> Standardised:
    """Native volume -> standard grid.

    Raises:
        ValueError: no foreground found.
    """
    settings = settings or StandardiseSettings()
    native_mask = foreground_mask(volume.array, settings.intensity)
    if not native_mask.any():
        raise ValueError("no foreground found in the volume")
    shape = (settings.size,) * 3
    transform = GridTransform(
        volume.shape, volume.affine, shape, _target_affine(native_mask, volume.affine, settings)
    )
    if settings.intensity == "window":
        low, high = settings.window
    else:
        low, high = np.percentile(volume.array[native_mask], settings.percentiles)
    scaled = np.clip((volume.array.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)
    mask = transform.to_target(native_mask.astype(np.float32)) > 0.5
    standard = transform.to_target(scaled) * mask
    details = {
        "steps": [
            "foreground mask",
            "canonical RAS box",
            f"resample to {settings.size}^3",
            f"intensity {settings.intensity}",
        ],
        "source_spacing_mm": [round(float(s), 4) for s in spacing(volume.affine)],
        "standard_spacing_mm": [round(float(s), 4) for s in spacing(transform.target_affine)],
        "foreground_ml": round(
            float(native_mask.sum() * np.prod(spacing(volume.affine))) / 1000, 1
        ),
    }
    return Standardised(standard.astype(np.float32), mask, transform, details)
