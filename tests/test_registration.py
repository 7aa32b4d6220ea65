"""Affine registration to the template: a known affine is recovered, and the result repeats."""

import numpy as np
from scipy.spatial.transform import Rotation

from cs3f.preprocess.registration import register_affine
from cs3f.preprocess.template import template_brain, template_mask
from cs3f.volume import Volume, resample


def _known_affine() -> np.ndarray:
    """Template RAS mm -> subject RAS mm: 8 and -5 degree tilts, anisotropic scale, a shift."""
    truth = np.eye(4)
    rotation = Rotation.from_euler("xz", [8, -5], degrees=True).as_matrix()
    truth[:3, :3] = rotation @ np.diag([1.08, 0.95, 1.04])
    truth[:3, 3] = [6.0, -4.0, 5.0]
    return truth


def test_recovers_a_known_affine_and_repeats_bit_for_bit():
    fixed = template_brain(2)
    truth = _known_affine()
    # The subject: the template moved by `truth`, on a grid shifted from the template's.
    subject_affine = fixed.affine.copy()
    subject_affine[:3, 3] += [3.0, -2.0, 1.0]
    subject = resample(
        fixed.array, fixed.affine, fixed.shape, np.linalg.inv(truth) @ subject_affine
    )
    moving = Volume(subject, subject_affine)
    fov = np.ones(moving.shape, bool)

    first = register_affine(moving, fixed, fov)
    second = register_affine(moving, fixed, fov)
    assert np.array_equal(first.matrix, second.matrix)

    mask = template_mask(2)
    voxels = np.argwhere(mask.array)
    points = mask.affine @ np.c_[voxels, np.ones(len(voxels))].T
    error = np.linalg.norm((first.matrix @ points - truth @ points)[:3], axis=0)
    print(f"brain points: mean error {error.mean():.2f} mm, max {error.max():.2f} mm")
    assert error.mean() < 1.0 and error.max() < 2.0
    assert abs(first.scale - np.linalg.det(truth[:3, :3]) ** (1 / 3)) < 0.01
