"""Lung CT: native series -> one standard-space crop per lung (CS3F), and the way back.

1. reorient to RAS and resample to ``step_mm`` isotropic (:func:`aligned_grid`);
2. lungs by the lungmask R231 model when ``lung_model`` gives its weights
   (:mod:`cs3f.preprocess.lung_model`), else by a classical method that needs no weights: air
   (HU < ``lung_hu``) inside the body outline (the body's largest component, holes filled slice
   by slice), 6-connected components; a component that straddles the body's midline (lungs
   joined by the trachea) is cut there; on each side the largest component is that lung;
3. HU clipped to ``window`` and min-max scaled to [0, 1];
4. each lung crop-or-padded to ``lung_crop`` voxels around its centre, spacing unchanged.

Each lung is its own region (``"left lung"``, ``"right lung"``), scored against the same lung of
the other studies. Left is the patient's left: -x in RAS (DICOM's +x, LPS).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from cs3f.preprocess.lung_model import model_lung_masks
from cs3f.preprocess.standard_space import (
    GridTransform,
    PreprocessingFailed,
    PreprocessSettings,
    Standardised,
    largest_component,
)
from cs3f.volume import Volume, aligned_grid, resample, spacing

__all__ = ["lung_masks", "preprocess_lungs"]

AIR_HU = -1024.0
BODY_HU = -500.0


def _body(hu: np.ndarray) -> np.ndarray:
    body = largest_component(hu > BODY_HU)
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    return body


def lung_masks(hu: np.ndarray, affine: np.ndarray, lung_hu: float) -> dict[str, np.ndarray]:
    """{"left lung", "right lung"}: bool masks on the grid of ``hu`` (a RAS-aligned grid, HU).

    A side with no air inside the body gets an empty mask.
    """
    body = _body(hu)
    empty = {"left lung": np.zeros(hu.shape, bool), "right lung": np.zeros(hu.shape, bool)}
    if not body.any():
        return empty
    air = (hu < lung_hu) & body
    centre_x = round(float(np.argwhere(body)[:, 0].mean()))  # RAS-aligned grid: axis 0 is x
    left_half = np.zeros(hu.shape, bool)
    if affine[0, 0] > 0:  # index grows towards +x, the patient's right
        left_half[:centre_x] = True
    else:
        left_half[centre_x:] = True
    labels, count = ndimage.label(air)
    if count == 0:
        return empty
    out = {}
    for name, side in (("left lung", left_half), ("right lung", ~left_half)):
        sizes = np.bincount(labels[side], minlength=count + 1)
        sizes[0] = 0
        out[name] = (labels == int(np.argmax(sizes))) & side if sizes.max() > 0 else empty[name]
    return out


def _crop_grid(mask: np.ndarray, affine: np.ndarray, crop: tuple[int, int, int]) -> np.ndarray:
    """Affine of a ``crop``-sized grid with ``affine``'s spacing, centred on ``mask``'s box."""
    index = np.argwhere(mask)
    centre = (index.min(axis=0) + index.max(axis=0)) / 2
    start = np.round(centre - (np.asarray(crop) - 1) / 2)
    out = np.array(affine, dtype=float)
    out[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return out


def preprocess_lungs(volume: Volume, settings: PreprocessSettings) -> list[Standardised]:
    """One CT volume (HU) -> two regions, left and right lung, each ``lung_crop`` voxels.

    Raises:
        PreprocessingFailed: a lung is missing or smaller than ``min_lung_ml``.
    """
    shape, iso_affine = aligned_grid(volume.shape, volume.affine, settings.step_mm)
    hu = resample(volume.array, volume.affine, shape, iso_affine, cval=AIR_HU)
    if settings.lung_model:
        masks = model_lung_masks(hu, iso_affine, settings.lung_model)
        method = f"lungmask R231 ({Path(settings.lung_model).name})"
    else:
        masks = lung_masks(hu, iso_affine, settings.lung_hu)
        method = f"air < {settings.lung_hu:g} HU inside the body, largest per side"
    voxel_ml = settings.step_mm**3 / 1000
    sizes = {name: float(mask.sum() * voxel_ml) for name, mask in masks.items()}
    if min(sizes.values()) < settings.min_lung_ml:
        found = ", ".join(f"{name} {ml:.0f} ml" for name, ml in sizes.items())
        raise PreprocessingFailed(
            f"lungs not found ({found}; at least {settings.min_lung_ml:g} ml each expected): "
            "is this a chest CT?"
        )
    low, high = settings.window
    scaled = np.clip((volume.array.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    regions = []
    for name, mask in masks.items():
        crop_affine = _crop_grid(mask, iso_affine, settings.lung_crop)
        transform = GridTransform(volume.shape, volume.affine, settings.lung_crop, crop_affine)
        crop_mask = resample(mask.astype(np.uint8), iso_affine, settings.lung_crop, crop_affine, 0)
        details = {
            "steps": [
                f"reorient to RAS, resample to {settings.step_mm:g} mm",
                f"lungs: {method}",
                f"HU window [{low:g}, {high:g}] -> [0, 1]",
                f"crop or pad to {'x'.join(map(str, settings.lung_crop))}",
            ],
            "lung_ml": round(sizes[name], 1),
            "source_spacing_mm": [round(float(s), 4) for s in spacing(volume.affine)],
        }
        regions.append(
            Standardised(
                name,
                transform.to_target(scaled),
                crop_mask.astype(bool),
                transform,
                crop_affine,
                details,
            )
        )
    return regions
