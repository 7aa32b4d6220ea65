"""Brain preprocessing on real data from ../shared/data: one brain in four patient positions,
the way back onto the source grid, and MS lesions through the already-registered path."""

import itertools

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA
from scipy import ndimage

from cs3f.io.dicom_volume import series_volume
from cs3f.io.nifti_io import load_nifti
from cs3f.preprocess.brain import preprocess_brain
from cs3f.preprocess.standard_space import PreprocessingFailed, PreprocessSettings
from cs3f.volume import Volume

DECUBITUS = SHARED_DATA / "dicom" / "decubitus"
MS = SHARED_DATA / "nifti" / "ms"
POSITIONS = ("HFS", "HFP", "HFDL", "HFDR")


def _t1_volume(position):
    folder = next(p for p in (DECUBITUS / position).iterdir() if p.is_dir() and "t1" in p.name)
    volume, _ = series_volume([pydicom.dcmread(p) for p in sorted(folder.iterdir())])
    return volume


@pytest.fixture(scope="module")
def decubitus():
    if not DECUBITUS.is_dir():
        pytest.skip("../shared/data absent")
    return {
        p: (_t1_volume(p), preprocess_brain(_t1_volume(p), PreprocessSettings())) for p in POSITIONS
    }


def test_four_patient_positions_agree_in_standard_space(decubitus):
    """NCC >= 0.9 and Dice >= 0.9 for every pair (measured: NCC 0.905-0.964, Dice 0.920-0.988;
    the registration is deterministic, so these repeat). The HFDL series' field of view cuts off
    part of the right hemisphere (deepbet: about 1,330 ml against about 1,540 ml in the other
    three), so its pairs are the lowest on both."""
    for a, b in itertools.combinations(POSITIONS, 2):
        first, second = decubitus[a][1], decubitus[b][1]
        both = first.mask & second.mask
        ncc = np.corrcoef(first.volume[both], second.volume[both])[0, 1]
        dice = 2 * both.sum() / (first.mask.sum() + second.mask.sum())
        print(f"{a}-{b}: NCC {ncc:.3f}, Dice {dice:.3f}")
        assert ncc >= 0.9 and dice >= 0.9, (a, b, ncc, dice)


def test_details_record_what_was_done(decubitus):
    for _, result in decubitus.values():
        details = result.details
        assert 1000 < details["brain_ml"] < 1800
        assert set(details["registration"]) == {
            "metric_mattes_mi",
            "iterations",
            "scale",
            "template_mask_dice",
        }
        assert any("deepbet" in step for step in details["steps"])
        assert result.volume.shape == (224, 224, 224) and result.mask.shape == (224, 224, 224)
        assert 0 <= result.volume.min() and result.volume.max() <= 1
        assert not result.volume[~result.mask].any()


def test_round_trip_lands_where_the_forward_transform_says(decubitus):
    """Balls painted in standard space, mapped back onto the source series' grid: their
    centroids land at the forward transform's prediction to well under one source voxel."""
    source, result = decubitus["HFDR"]
    transform = result.transform
    assert transform.source_shape == source.shape
    np.testing.assert_array_equal(transform.source_affine, source.affine)
    inner = np.argwhere(ndimage.binary_erosion(result.mask, iterations=12))
    source_index = transform.target_to_source_index(inner)
    whole = np.all((source_index >= 2) & (source_index <= np.array(source.shape) - 3), axis=1)
    inner = inner[whole]  # balls that fit inside the source's field of view
    centres = inner[:: len(inner) // 5][:5]
    grid = np.indices(result.mask.shape).transpose(1, 2, 3, 0)
    painted = np.zeros(result.mask.shape, np.float32)
    for centre in centres:
        painted[np.linalg.norm(grid - centre, axis=-1) <= 10] = 1.0
    back = transform.to_source(painted)
    labels, count = ndimage.label(back > 0.01)
    assert count == len(centres)
    found = np.array(ndimage.center_of_mass(back, labels, range(1, count + 1)))
    expected = transform.target_to_source_index(centres)
    errors = [np.min(np.abs(found - e).max(axis=1)) for e in expected]
    print("round-trip error (source voxels):", np.round(errors, 3))
    assert max(errors) < 0.25


@pytest.mark.skipif(not MS.is_dir(), reason="../shared/data absent")
@pytest.mark.parametrize("patient", ["patient07", "patient19"])
def test_ms_lesions_keep_their_volume_through_the_atlas_path(patient):
    flair = load_nifti(MS / patient / "FLAIR_mni.nii.gz")
    lesion = load_nifti(MS / patient / "lesion_gt_mni.nii.gz")
    result = preprocess_brain(flair, PreprocessSettings(input="atlas"))
    carried = result.transform.to_target((lesion.array > 0.5).astype(np.uint8), order=0) > 0
    source_ml = (lesion.array > 0.5).sum() * abs(np.linalg.det(lesion.affine[:3, :3])) / 1000
    standard_ml = carried.sum() * (156 / 224) ** 3 / 1000
    print(f"{patient}: lesion {source_ml:.2f} ml -> {standard_ml:.2f} ml")
    assert standard_ml >= 0.95 * source_ml
    assert (carried & ~result.mask).sum() <= 0.01 * carried.sum()
    assert "registration" not in result.details and result.details["brain_ml"] > 900


def test_implausible_brain_fails_with_the_measured_reason():
    head = np.zeros((40, 40, 40), np.float32)
    head[10:30, 10:30, 10:30] = 1.0  # 8 ml: no adult brain
    with pytest.raises(PreprocessingFailed, match="brain volume"):
        preprocess_brain(Volume(head, np.eye(4)), PreprocessSettings(input="atlas"))


@pytest.mark.parametrize("value", [0.0, 312.0])
def test_a_blank_series_fails_with_a_reason_not_a_numpy_error(value):
    """A series of one grey value (a test pattern, an empty export) has no brain to extract;
    deepbet itself would stop on the argmax of an empty sequence."""
    blank = Volume(np.full((60, 60, 40), value, np.float32), np.diag([1.0, 1.0, 1.5, 1.0]))
    with pytest.raises(PreprocessingFailed, match="blank"):
        preprocess_brain(blank, PreprocessSettings())


def test_an_image_without_a_brain_fails_with_a_reason():
    speck = np.zeros((60, 60, 40), np.float32)
    speck[30, 30, 20] = 1.0  # deepbet's networks find nothing to keep
    with pytest.raises(PreprocessingFailed, match="found no brain"):
        preprocess_brain(Volume(speck, np.eye(4)), PreprocessSettings())
