"""Lesions planted in synthetic subjects: irregular textured hyper- or hypo-intense blobs of
a size class of the evaluator, and real MS lesions of the donors with their own intensity
relative to the surrounding tissue."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from cs3f_tools.cohort_sources import Donor, Sources
from cs3f_tools.metrics import SIZE_CLASSES

__all__ = ["DONOR_CLASSES", "LESION_KINDS", "LESION_MM3"]

# lesion volumes (mm^3) drawn per size class of the evaluator (SIZE_CLASSES), inside its bounds
LESION_MM3 = {
    "small": (60.0, 99.0),
    "medium": (150.0, 900.0),
    "large": (1300.0, 4800.0),
    "xlarge": (6000.0, 80000.0),
}
LESION_KINDS = ("hyper", "hypo", "ms")
DONOR_CLASSES = ("small", "medium", "large")  # MS donors have no single lesion over 5 ml


def _blob(rng, brain: np.ndarray, size: str, voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """An irregular textured blob of ``size`` class: (profile with a soft edge, its extent)."""
    low, high = LESION_MM3[size]
    volume = np.exp(rng.uniform(np.log(low), np.log(high)))
    # three overlapping lobes of this radius cover about 1.9 spheres: 0.81^3 * 1.9 = 1
    radius = 0.81 * (3 * volume / (4 * np.pi)) ** (1 / 3) / voxel_mm
    inner = np.argwhere(ndimage.binary_erosion(brain, iterations=max(3, int(radius) + 2)))
    centre = inner[rng.integers(len(inner))]
    grid = np.indices(brain.shape).transpose(1, 2, 3, 0).astype(np.float32)
    lobes = centre + rng.normal(0, radius / 3, (3, 3))
    distance = np.min([np.linalg.norm(grid - lobe, axis=-1) for lobe in lobes], axis=0)
    texture = 1 + 0.3 * ndimage.gaussian_filter(rng.standard_normal(brain.shape), 1.0) / 0.2
    return np.clip(radius - distance + 0.5, 0, 1) * texture, distance < radius


def _lesions(
    rng,
    sources: Sources,
    brain: np.ndarray,
    count: int,
    sizes: Sequence[str],
    voxel_mm: float,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(multiplicative lesion profile on the grid (0 = unchanged), the lesion mask, what was
    planted).

    Kinds: "hyper" / "hypo" synthetic blobs (intensity x 1.5-1.9 or x 0.1-0.5 at the core), and
    "ms": a real lesion component of a donor, at its own MNI position, with its own intensity
    relative to its surroundings (never xlarge: no single MS lesion is that big). Sizes are drawn
    per lesion from ``sizes`` (classes of the evaluator), for their volume in the subject, where a
    template voxel measures ``voxel_mm``.
    """
    profile, extent = np.zeros(brain.shape, dtype=np.float32), np.zeros(brain.shape, bool)
    planted = []
    for _ in range(count):
        size = str(rng.choice(list(sizes)))
        ms = bool(sources.donors) and size in DONOR_CLASSES
        kind = str(rng.choice(LESION_KINDS if ms else LESION_KINDS[:2]))
        if kind == "ms":
            donor, label = _donor_lesion(rng, sources.donors, size, voxel_mm**3)
            inside = donor.labels == label
            change = np.where(inside, donor.ratio - 1, 0)
            size = f"{donor.name}, {inside.sum() * voxel_mm**3:.0f} mm^3"
        else:
            shape, inside = _blob(rng, brain, size, voxel_mm)
            change = (1 if kind == "hyper" else -1) * rng.uniform(0.5, 0.9) * shape
        profile = np.where(np.abs(change) > np.abs(profile), change, profile)
        extent |= inside
        planted.append(f"{kind} ({size})")
    return profile * brain, extent & brain, planted


def _donor_lesion(rng, donors: Sequence[Donor], size: str, voxel_mm3: float) -> tuple[Donor, int]:
    """A random donor lesion of the ``size`` class (or, where the donors have none of that class,
    of any class), never one under ``LESION_MM3["small"][0]``: a smaller one may vanish on the
    subject's grid."""
    low, high = SIZE_CLASSES[size]
    candidates, fallback = [], []
    for donor in donors:
        volumes = np.bincount(donor.labels.ravel())[1:] * voxel_mm3
        for label in np.flatnonzero(volumes >= LESION_MM3["small"][0]) + 1:
            fallback.append((donor, int(label)))
            if low <= volumes[label - 1] < high:
                candidates.append((donor, int(label)))
    chosen = candidates or fallback
    return chosen[rng.integers(len(chosen))]
