"""What preprocessing produces: standard-space volumes that remember the way back.

Every preprocessing step (reorientation, resampling, registration, crop) is affine, so the whole
chain from a standard-space voxel to the source series' voxel is one 4x4 matrix. A
:class:`GridTransform` keeps the two grids in the *source's* world (RAS mm), which makes the
way back a single resampling with no error piling up step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from cs3f.volume import index_box_world, resample

__all__ = [
    "GridTransform",
    "PreprocessSettings",
    "PreprocessingFailed",
    "Standardised",
    "cube_grid",
    "largest_component",
    "world_box",
]

INPUTS = ("native", "atlas")


class PreprocessingFailed(ValueError):
    """A study cannot be brought into the standard space (the message says why)."""


@dataclass(frozen=True)
class PreprocessSettings:
    """Preprocessing settings; defaults follow the papers.

    Attributes:
        input: brain MRI only. ``"native"`` = raw scanner series (skull stripping and atlas
            registration run); ``"atlas"`` = already registered and skull-stripped (BraTS-like):
            only crop, resample and intensity standardisation.
        size: voxels per side of the cubic brain grid (224).
        crop_mm: side of the brain crop in mm, centred on the template brain (156).
        step_mm: isotropic voxel size for skull stripping and lung segmentation (1 mm).
        registration_mm: resolution of the template the registration runs against (1 or 2).
        brain_ml: (low, high) plausible brain-mask volume; outside = failed study.
        min_template_dice: lowest plausible overlap (Dice) of the registered brain mask with the
            template's (contrast-agnostic, unlike an intensity correlation).
        scale_range: (low, high) plausible linear scale of the registration (template -> subject).
        landmarks: Nyul landmarks (.npy); empty = the T1 landmarks shipped with cs3f.
        window: CT (low, high) HU mapped to 0 and 1.
        lung_crop: voxels (x, y, z) of each lung's crop at ``step_mm`` (160, 238, 336).
        lung_hu: voxels below this HU inside the body are air or lung (classical mask).
        lung_model: lungmask R231 weights (a ``.pth`` state dict) to segment the lungs with;
            empty = the classical mask.
        min_lung_ml: a lung smaller than this means the series is not a chest CT (0: no check).
        workers: studies preprocessed at once, one single-threaded process each (0: one per
            usable core); the results do not depend on it.
    """

    input: str = "native"
    size: int = 224
    crop_mm: float = 156.0
    step_mm: float = 1.0
    registration_mm: int = 2
    brain_ml: tuple[float, float] = (600.0, 2500.0)
    min_template_dice: float = 0.7
    scale_range: tuple[float, float] = (0.75, 1.33)
    landmarks: str = ""
    window: tuple[float, float] = (-800.0, 400.0)
    lung_crop: tuple[int, int, int] = (160, 238, 336)
    lung_hu: float = -400.0
    min_lung_ml: float = 100.0
    lung_model: str = ""
    workers: int = 0

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per usable core), got {self.workers}")
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.size < 16:
            raise ValueError(f"size must be >= 16, got {self.size}")
        for name in ("crop_mm", "step_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.min_lung_ml >= 0:
            raise ValueError(f"min_lung_ml must be >= 0 (0: no check), got {self.min_lung_ml}")
        for name in ("brain_ml", "scale_range", "window"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name} must be (low, high) with low < high, got {(low, high)}")
        if not 0 < self.brain_ml[0]:
            raise ValueError(f"brain_ml must be positive volumes in ml, got {self.brain_ml}")
        if not 0 < self.scale_range[0] <= 1 <= self.scale_range[1]:
            raise ValueError(f"scale_range must hold 1 and be > 0, got {self.scale_range}")
        if not 0 <= self.min_template_dice <= 1:
            raise ValueError(f"min_template_dice must be in [0, 1], got {self.min_template_dice}")
        if self.landmarks and not Path(self.landmarks).is_file():
            raise ValueError(f"landmarks {self.landmarks} is not a file")
        if self.registration_mm not in (1, 2):
            raise ValueError(f"registration_mm must be 1 or 2, got {self.registration_mm}")
        if len(self.lung_crop) != 3 or min(self.lung_crop) < 16:
            raise ValueError(f"lung_crop must be 3 sizes >= 16, got {self.lung_crop}")
        if self.lung_model and not Path(self.lung_model).is_file():
            raise ValueError(f"lung_model {self.lung_model} is not a file")


@dataclass(frozen=True)
class GridTransform:
    """The source series' grid and the standard grid, both placed in the source's world.

    ``target_affine`` maps a standard voxel index to the source's RAS mm, composing every step
    (for the brain: crop grid in template space, then the registration back to the subject).
    """

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    target_shape: tuple[int, int, int]
    target_affine: np.ndarray

    def to_target(self, values: np.ndarray, order: int = 1) -> np.ndarray:
        """Source-grid values -> standard grid (float32 for order 1, same dtype for order 0)."""
        return resample(values, self.source_affine, self.target_shape, self.target_affine, order)

    def to_source(self, values: np.ndarray, order: int = 1) -> np.ndarray:
        """Standard-grid values -> the source grid; 0 where the source lies outside the crop."""
        return resample(values, self.target_affine, self.source_shape, self.source_affine, order)

    def target_to_source_index(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) standard voxel indices -> (N, 3) fractional source voxel indices."""
        matrix = np.linalg.inv(self.source_affine) @ self.target_affine
        return np.asarray(points, float) @ matrix[:3, :3].T + matrix[:3, 3]


@dataclass
class Standardised:
    """One region of one study in standard space.

    Attributes:
        region: ``"brain"``, ``"left lung"`` or ``"right lung"``; studies are compared region
            by region.
        volume: (X, Y, Z) float32 in [0, 1].
        mask: (X, Y, Z) bool foreground (brain or lung).
        transform: the way back to the source grid.
        affine: the standard grid in its own space (template mm for the brain), for saving.
        details: what was done and measured, for ``scores.json``.
    """

    region: str
    volume: np.ndarray
    mask: np.ndarray
    transform: GridTransform
    affine: np.ndarray
    details: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The region's name for file names: ``"left_lung"``."""
        return region_slug(self.region)


def region_slug(region: str) -> str:
    """A region's name for file names: ``"left lung"`` -> ``"left_lung"``."""
    return region.replace(" ", "_")


def cube_grid(centre_mm: np.ndarray, side_mm: float, size: int) -> np.ndarray:
    """Affine of a ``size``^3 RAS-aligned grid whose voxels tile a cube of ``side_mm`` centred on
    ``centre_mm`` (voxel centres sit half a voxel inside the cube's faces)."""
    step = side_mm / size
    affine = np.diag([step, step, step, 1.0])
    affine[:3, 3] = np.asarray(centre_mm, float) - side_mm / 2 + step / 2
    return affine


def world_box(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) RAS mm corners of the bounding box of ``mask``'s voxel centres."""
    index = np.argwhere(mask)
    return index_box_world(index.min(axis=0), index.max(axis=0), affine)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of ``mask`` with its holes filled (empty stays empty)."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))
