"""Brain MRI: native series -> the papers' standard space (and the way back).

Native input (``input="native"``), as in the papers:

1. reorient to RAS and resample to ``step_mm`` isotropic (one resampling: :func:`aligned_grid`);
2. brain extraction with deepbet on that grid, then N4 bias-field correction inside the brain;
3. affine registration of the extracted brain to the MNI152 2009 template;
4. the ``crop_mm`` cube centred on the template brain, sampled at ``size``^3;
5. Nyul histogram standardisation inside the brain mask, scaled to [0, 1].

Steps 1, 3 and 4 compose into one affine, so intensities are resampled once, straight from the
source series (the smooth bias field is resampled alongside). Already-registered, skull-stripped
input (``input="atlas"``) skips 1-3: the mask is the non-zero voxels and the crop is centred on
the mask.

A study whose brain volume, registration scale or brain-mask overlap with the template is
implausible raises :class:`PreprocessingFailed` with the measured numbers rather than being
scored silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cs3f.preprocess.bias_field import log_bias_field
from cs3f.preprocess.intensity import load_landmarks, nyul_unit
from cs3f.preprocess.registration import RegistrationFailed, register_affine
from cs3f.preprocess.skull_strip import brain_mask
from cs3f.preprocess.standard_space import (
    GridTransform,
    PreprocessingFailed,
    PreprocessSettings,
    Standardised,
    cube_grid,
    largest_component,
    world_box,
)
from cs3f.preprocess.template import template_brain, template_centre, template_on
from cs3f.volume import Volume, aligned_grid, resample, spacing

__all__ = ["preprocess_brain"]


def _ml(mask: np.ndarray, affine: np.ndarray) -> float:
    return float(mask.sum() * np.prod(spacing(affine)) / 1000)


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise PreprocessingFailed(
            f"{name} {value:.3g} is outside the plausible range [{low:g}, {high:g}]: "
            "brain extraction or registration failed"
        )


@dataclass
class _Prepared:
    """What the native or atlas path hands to the common tail of :func:`preprocess_brain`."""

    subject_affine: np.ndarray  # standard grid -> subject RAS mm
    own_affine: np.ndarray  # standard grid -> its own space (template mm, or the subject's)
    mask: Volume  # the brain mask on the grid it was made on
    log_bias: Volume | None  # N4 log bias field, or None
    details: dict


def _native(volume: Volume, settings: PreprocessSettings) -> _Prepared:
    """Steps 1-3."""
    shape, iso_affine = aligned_grid(volume.shape, volume.affine, settings.step_mm)
    iso = resample(volume.array, volume.affine, shape, iso_affine)
    fov = resample(np.ones(volume.shape, np.float32), volume.affine, shape, iso_affine) > 0.99
    mask = brain_mask(iso)
    brain_ml = _ml(mask, iso_affine)
    _check("brain volume (ml)", brain_ml, *settings.brain_ml)
    log_bias = log_bias_field(Volume(iso, iso_affine), mask)
    corrected = iso / np.exp(log_bias) * mask
    try:
        registration = register_affine(
            Volume(corrected, iso_affine), template_brain(settings.registration_mm), fov
        )
    except RegistrationFailed as exc:
        raise PreprocessingFailed(f"registration to the template failed: {exc}") from exc
    _check("registration scale", registration.scale, *settings.scale_range)
    template_affine = cube_grid(template_centre(), settings.crop_mm, settings.size)
    details = {
        "steps": [
            f"reorient to RAS, resample to {settings.step_mm:g} mm",
            "brain extraction (deepbet)",
            "N4 bias-field correction (SimpleITK)",
            "rigid, similarity then affine registration to MNI152 2009 (SimpleITK, Mattes MI)",
            f"crop {settings.crop_mm:g} mm cube, resample to {settings.size}^3",
            "Nyul standardisation, [0, 1]",
        ],
        "brain_ml": round(brain_ml, 1),
        "registration": {
            "metric_mattes_mi": round(registration.metric, 4),
            "iterations": registration.iterations,
            "scale": round(registration.scale, 4),
        },
    }
    return _Prepared(
        registration.matrix @ template_affine,
        template_affine,
        Volume(mask, iso_affine),
        Volume(log_bias, iso_affine),
        details,
    )


def _atlas(volume: Volume, settings: PreprocessSettings) -> _Prepared:
    """Already in atlas space: the mask is the non-zero voxels, the crop is centred on it."""
    mask = largest_component(volume.array > 0)
    if not mask.any():
        raise PreprocessingFailed("the volume has no non-zero voxels")
    low, high = world_box(mask, volume.affine)
    affine = cube_grid((low + high) / 2, settings.crop_mm, settings.size)
    brain_ml = _ml(mask, volume.affine)
    _check("brain volume (ml)", brain_ml, *settings.brain_ml)
    details = {
        "steps": [
            "input already registered and skull-stripped: mask = non-zero voxels",
            f"crop {settings.crop_mm:g} mm cube, resample to {settings.size}^3",
            "Nyul standardisation, [0, 1]",
        ],
        "brain_ml": round(brain_ml, 1),
    }
    return _Prepared(affine, affine, Volume(mask, volume.affine), None, details)


def preprocess_brain(
    volume: Volume, settings: PreprocessSettings, standardise_intensity: bool = True
) -> Standardised:
    """One brain MRI volume -> its standard-space region ``"brain"``.

    ``standardise_intensity=False`` stops before Nyul (raw intensities inside the mask); it is
    how the reference landmarks are made.

    Raises:
        PreprocessingFailed: no brain found, or a check on the result failed.
    """
    prepared = (_native if settings.input == "native" else _atlas)(volume, settings)
    details, target_affine = prepared.details, prepared.subject_affine
    shape = (settings.size,) * 3
    transform = GridTransform(volume.shape, volume.affine, shape, target_affine)
    mask = prepared.mask
    standard_mask = resample(mask.array.astype(np.uint8), mask.affine, shape, target_affine, 0) > 0
    if not standard_mask.any():
        raise PreprocessingFailed("the brain mask misses the standard crop entirely")
    values = transform.to_target(volume.array) * standard_mask
    if prepared.log_bias is not None:
        bias = prepared.log_bias
        values /= np.exp(resample(bias.array, bias.affine, shape, target_affine))
    if settings.input == "native":
        template_inside = template_on(shape, prepared.own_affine)
        overlap = (standard_mask & template_inside).sum()
        dice = float(2 * overlap / (standard_mask.sum() + template_inside.sum()))
        details["registration"]["template_mask_dice"] = round(dice, 4)
        _check("brain-mask overlap (Dice) with the template", dice, settings.min_template_dice, 1)
    if standardise_intensity:
        values = nyul_unit(values, standard_mask, load_landmarks(settings.landmarks))
    details["mask_ml_in_crop"] = round(_ml(standard_mask, target_affine), 1)
    details["source_spacing_mm"] = [round(float(s), 4) for s in spacing(volume.affine)]
    details["standard_spacing_mm"] = round(settings.crop_mm / settings.size, 4)
    return Standardised(
        "brain", values.astype(np.float32), standard_mask, transform, prepared.own_affine, details
    )
