"""The adult brain template: MNI152 2009 (skull-stripped T1 and brain mask), shipped in nilearn."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cs3f.preprocess.standard_space import world_box
from cs3f.volume import Volume, resample

__all__ = ["template_brain", "template_centre", "template_mask", "template_on"]


@lru_cache(maxsize=2)
def template_brain(resolution_mm: int = 1) -> Volume:
    """The MNI152 2009 skull-stripped T1 template (values in [0, 1]) at 1 or 2 mm."""
    from nilearn.datasets import load_mni152_template

    image = load_mni152_template(resolution=resolution_mm)
    return Volume(np.asarray(image.get_fdata(), dtype=np.float32), image.affine)


@lru_cache(maxsize=2)
def template_mask(resolution_mm: int = 1) -> Volume:
    """The template's brain mask (bool) at 1 or 2 mm."""
    from nilearn.datasets import load_mni152_brain_mask

    image = load_mni152_brain_mask(resolution=resolution_mm)
    return Volume(np.asarray(image.get_fdata()) > 0, image.affine)


@lru_cache(maxsize=1)
def template_centre() -> np.ndarray:
    """(3,) MNI mm: centre of the template brain mask's bounding box, where the crop is centred."""
    mask = template_mask(1)
    low, high = world_box(mask.array, mask.affine)
    centre = (low + high) / 2
    centre.flags.writeable = False  # cached: shared by every caller
    return centre


@lru_cache(maxsize=4)
def _template_on(shape: tuple[int, int, int], affine_key: bytes) -> np.ndarray:
    affine = np.frombuffer(affine_key).reshape(4, 4)
    mask = template_mask(1)
    return resample(mask.array.astype(np.uint8), mask.affine, shape, affine, order=0) > 0


def template_on(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """The template's brain mask (bool) on a grid given in MNI mm (cached per grid)."""
    return _template_on(tuple(shape), np.asarray(affine, dtype=np.float64).tobytes())
