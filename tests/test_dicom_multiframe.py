"""Multi-frame instances (Enhanced MR/CT, Legacy Converted Enhanced) read as volumes: geometry and
values agree with dcm2niix and with the single-frame series they were made from (highdicom's
legacy conversion), whatever the frame order; the single-frame checks apply; frames without
geometry are refused naming what is missing; the app picks and reads a multi-frame series."""

import copy
import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, as_multiframe
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app.__main__ import main
from cs3f.io import dicom_volume
from cs3f.io.dicom_volume import (
    GeometryError,
    PixelError,
    frame_order,
    series_volume,
    to_source_order,
)
from cs3f_tools.cohort_dicom import write_series

DCM2NIIX = pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix (Debian) absent")
SHUFFLED = [7, 0, 1, 4, 2, 5, 8, 6, 3]
"""Frame f of the multi-frame instance holds slice SHUFFLED[f] of the single-frame series."""
DICOM = SHARED_DATA / "dicom"
REAL = [f"decubitus/{p}" for p in ("HFS", "HFP", "HFDL", "HFDR")] + ["ct_abdomen"]


def _dcm2niix(path, tmp_path):
    """dcm2niix's volume of the one DICOM file ``path``, reoriented to the closest canonical."""
    folder = tmp_path / "dcm2niix"
    folder.mkdir()
    shutil.copy(path, folder / "in.dcm")
    command = ["dcm2niix", "-z", "y", "-b", "n", "-f", "ref", "-o", str(folder), str(folder)]
    subprocess.run(command, check=True, capture_output=True)
    return nib.as_closest_canonical(nib.load(folder / "ref.nii.gz"))


def _assert_agrees(volume, reference):
    ours = nib.as_closest_canonical(nib.Nifti1Image(volume.array, volume.affine))
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-3)
    np.testing.assert_array_equal(ours.get_fdata(), reference.get_fdata())


@pytest.fixture()
def series(tmp_path):
    """9 single-frame MR slices, 12 x 10, on an oblique grid (0.9 x 1.1 x 2.5 mm)."""
    a, b = np.radians(20), np.radians(10)
    tilt = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    turn = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ tilt @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = [-10, 5, 30]
    image = np.random.default_rng(0).integers(0, 4000, (12, 10, 9)).astype(np.float64)
    paths = write_series(image, affine, tmp_path / "single", {"PatientID": "P"}, uid_seed="mf")
    return [pydicom.dcmread(p) for p in paths]


@pytest.fixture()
def enhanced(series, tmp_path):
    """``series`` as one multi-frame instance, its frames out of slice order (SHUFFLED)."""
    return as_multiframe(series, tmp_path / "enhanced.dcm", SHUFFLED)


@DCM2NIIX
def test_frames_in_any_order_make_the_single_frame_volume(series, enhanced, tmp_path):
    reference, _ = series_volume(series)
    volume, slices = series_volume([enhanced])
    assert slices == [enhanced]
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_array_equal(frame_order(enhanced), np.argsort(SHUFFLED))
    stack = volume.array.transpose(2, 1, 0)  # (slices, rows, cols)
    np.testing.assert_array_equal(to_source_order(slices, stack), enhanced.pixel_array)
    _assert_agrees(volume, _dcm2niix(enhanced.filename, tmp_path))


@DCM2NIIX
@pytest.mark.skipif(not DICOM.is_dir(), reason="../shared/data absent")
@pytest.mark.parametrize("name", REAL)
def test_real_series_as_one_instance_agree_with_dcm2niix_and_the_series(name, tmp_path):
    """Siemens MR in four patient positions (sagittal, 35 slices) and a Siemens CT (axial, 20
    slices, JPEG 2000, rescaled to HU), converted with their frames in reverse slice order."""
    folder = DICOM / name
    if name != "ct_abdomen":
        folder = next(p for p in folder.iterdir() if "t1" in p.name)
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    reference, _ = series_volume(datasets)
    if name == "ct_abdomen":  # anonymised to empty UIDs, which a conversion cannot carry
        study, series_uid = generate_uid(), generate_uid()
        for ds in datasets:
            ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
    reverse = list(range(len(datasets)))[::-1]
    # dcm2niix reads no multi-frame JPEG 2000 ("No valid DICOM images"): native pixels for it
    enhanced = as_multiframe(datasets, tmp_path / "mf.dcm", reverse, ExplicitVRLittleEndian)
    volume, _ = series_volume([enhanced])
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, reference.array)
    _assert_agrees(volume, _dcm2niix(enhanced.filename, tmp_path))
    if name == "ct_abdomen":
        assert volume.array.min() == -1024  # PixelValueTransformationSequence applied
        compressed = as_multiframe(datasets, tmp_path / "j2k.dcm", reverse)
        assert compressed.file_meta.TransferSyntaxUID == datasets[0].file_meta.TransferSyntaxUID
        np.testing.assert_array_equal(series_volume([compressed])[0].array, reference.array)


@DCM2NIIX
def test_an_enhanced_ct_agrees_with_dcm2niix(monkeypatch, tmp_path):
    """pydicom's Enhanced CT (2 frames, stored against slice order, shared orientation and
    spacing, per-frame positions, a HU rescale); two frames pass only with the minimum lowered."""
    path = get_testdata_file("eCT_Supplemental.dcm")
    enhanced = pydicom.dcmread(path)
    with pytest.raises(GeometryError, match="2 frames; a volume needs at least 8"):
        series_volume([enhanced])
    monkeypatch.setattr(dicom_volume, "MIN_SLICES", 2)
    volume, _ = series_volume([enhanced])
    np.testing.assert_array_equal(frame_order(enhanced), [1, 0])
    assert volume.array.min() == -1024
    _assert_agrees(volume, _dcm2niix(path, tmp_path))


@pytest.mark.parametrize(
    "name",
    ["emri_small.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm"],
)
def test_frames_without_geometry_are_refused_naming_what_is_missing(name):
    """pydicom's Enhanced MR files (10 frames) carry no functional groups at all."""
    enhanced = pydicom.dcmread(get_testdata_file(name))
    missing = "no PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence"
    with pytest.raises(GeometryError, match=missing):
        series_volume([enhanced])


def test_one_missing_group_is_named(enhanced):
    del enhanced.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    with pytest.raises(GeometryError, match="no PixelMeasuresSequence for its frames"):
        series_volume([enhanced])


def _position(enhanced, frame):
    return enhanced.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0]


def _uneven(enhanced):
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    cosines = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient)
    item = _position(enhanced, 2)  # 0.5 mm along the normal, of 2.5 mm slices
    normal = np.cross(cosines[:3], cosines[3:])
    item.ImagePositionPatient = list(np.asarray(item.ImagePositionPatient) + 0.5 * normal)


def _duplicate(enhanced):
    _position(enhanced, 2).ImagePositionPatient = _position(enhanced, 3).ImagePositionPatient


def _orientation_per_frame(enhanced, turned=None):
    """The shared orientation moved into each frame; frame ``turned`` turned about its normal."""
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    for n, frame in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        item = copy.deepcopy(shared.PlaneOrientationSequence)
        if n == turned:
            cosines = item[0].ImageOrientationPatient
            item[0].ImageOrientationPatient = [*cosines[3:], *(-c for c in cosines[:3])]
        frame.PlaneOrientationSequence = item
    del shared.PlaneOrientationSequence


def _mixed_orientation(enhanced):
    _orientation_per_frame(enhanced, turned=4)


@pytest.mark.parametrize(
    "edit, reason",
    [
        (_uneven, "regularly-spaced"),
        (_duplicate, "Multiple frames found at one or more plane positions"),
        (_mixed_orientation, "consistent ImageOrientationPatient"),
    ],
)
def test_frames_off_one_regular_grid_are_refused(enhanced, edit, reason):
    edit(enhanced)
    with pytest.raises(GeometryError, match=f"do not form one regular grid: .*{reason}"):
        series_volume([enhanced])


def test_orientation_in_every_frame_reads_as_shared(enhanced):
    """Some scanners repeat the orientation in each frame instead of sharing it."""
    reference, _ = series_volume([enhanced])
    _orientation_per_frame(enhanced)
    volume, _ = series_volume([enhanced])
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_array_equal(volume.affine, reference.affine)


def test_several_multi_frame_instances_are_refused(enhanced):
    with pytest.raises(GeometryError, match="2 instances, some multi-frame"):
        series_volume([enhanced, copy.deepcopy(enhanced)])


def test_a_rescale_per_frame_is_applied_per_frame(enhanced):
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    for n, frame in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        item = copy.deepcopy(shared.PixelValueTransformationSequence)
        item[0].RescaleSlope, item[0].RescaleIntercept = n + 1, -100 * n
        frame.PixelValueTransformationSequence = item
    del shared.PixelValueTransformationSequence
    volume, slices = series_volume([enhanced])
    stored = enhanced.pixel_array.astype(np.float32)
    frames = np.arange(len(stored))[:, None, None]
    expected = stored * (frames + 1) - 100 * frames
    np.testing.assert_array_equal(
        to_source_order(slices, volume.array.transpose(2, 1, 0)), expected
    )


def test_monochrome1_is_inverted_as_for_single_frame(series, enhanced):
    for ds in [*series, enhanced]:
        ds.PhotometricInterpretation = "MONOCHROME1"
    reference, _ = series_volume(series)
    volume, _ = series_volume([enhanced])
    np.testing.assert_array_equal(volume.array, reference.array)


def test_colour_frames_are_refused_before_decoding(enhanced):
    enhanced.SamplesPerPixel, enhanced.PhotometricInterpretation = 3, "RGB"
    with pytest.raises(PixelError, match="colour images .3 samples per pixel, RGB."):
        series_volume([enhanced])


def test_the_app_picks_and_reads_a_multi_frame_series(series, tmp_path):
    """One study, two matching series: 9 slices in one multi-frame instance and 4 single-frame
    instances. The series of most slices (not instances) is chosen and read; the batch of one
    study then stops before preprocessing, so this runs in seconds."""
    study = tmp_path / "in" / "study"
    study.mkdir(parents=True)
    enhanced = as_multiframe(series, study / "enhanced.dcm", SHUFFLED)  # a series of its own
    for n, ds in enumerate(series[:4]):
        ds.save_as(study / f"single-{n}.dcm")
    out = tmp_path / "out"
    assert main(["-i", str(tmp_path / "in"), "-o", str(out), "--encoder", "pixels"]) == 1
    (row,) = json.loads((out / "scores.json").read_text())["studies"]
    assert row["series_instance_uid"] == enhanced.SeriesInstanceUID
    assert row["reason"] == "batch too small to score"  # read, with a SEG it could carry
