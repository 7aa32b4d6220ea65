"""The SEG pre-flight: a series that could not carry a valid SEG is refused when it is read,
naming the attribute and never its value; a SEG on a multi-frame source lies on its frames
(read back with highdicom, checked with dciodvfy where installed)."""

import copy
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import as_multiframe

from cs3f.io.dicom_seg import SourceError, anomaly_segmentation, check_source
from cs3f.io.dicom_volume import LPS_TO_RAS, series_volume, to_source_order
from cs3f_tools.cohort_dicom import write_series


@pytest.fixture()
def slices(tmp_path):
    image = np.random.default_rng(0).uniform(0, 1000, (12, 10, 8))
    affine = np.diag([1.0, 1.2, 1.5, 1.0])
    tags = {"PatientName": "Doe^Jane", "PatientID": "P-1", "AccessionNumber": "A1"}
    paths = write_series(image, affine, tmp_path, tags, uid_seed="seg-check")
    return series_volume([pydicom.dcmread(p) for p in paths])[1]


def test_a_valid_series_passes_and_its_seg_builds(slices):
    check_source(slices)
    assert anomaly_segmentation(slices, np.zeros((12, 10, 8), bool), "pixels", 0.5).NumberOfFrames


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("PatientBirthDate", "1970-13-45"),  # not the DA format
        ("PatientBirthDate", "19701345"),  # the format, but no such date
        ("StudyTime", "256100"),
        ("StudyInstanceUID", "1.2.826.0.1/../7"),
        ("SOPInstanceUID", "1.2.3.abc"),
    ],
)
def test_an_attribute_the_seg_would_carry_is_named_not_echoed(slices, keyword, value):
    target = slices[3] if keyword == "SOPInstanceUID" else slices[0]
    target[keyword].value = value
    with pytest.raises(SourceError, match=keyword) as error:
        check_source(slices)
    assert value not in str(error.value)
    if keyword == "PatientBirthDate" and value == "1970-13-45":
        with pytest.raises(ValueError, match=value):  # what the end of the run used to hit
            anomaly_segmentation(slices, np.zeros((12, 10, 8), bool), "pixels", 0.5)


@pytest.fixture(params=["shared", "per frame"])
def multiframe_seg(request, tmp_path):
    """(source, its volume and slices, the mask, the SEG's path). The source: 8 slices as one
    multi-frame instance, frames out of slice order, its orientation shared or repeated in every
    frame (which highdicom's SEG does not read); ``unchanged``: a copy from before the SEG."""
    image = np.random.default_rng(1).uniform(0, 1000, (12, 10, 8))
    affine = np.array([[0, 0, 2.0, -8], [1.1, 0, 0, 4], [0, -0.9, 0, 20], [0, 0, 0, 1]])
    tags = {"PatientName": "Doe^Jane", "PatientID": "P-1", "AccessionNumber": "A1"}
    paths = write_series(image, affine, tmp_path / "single", tags, uid_seed="seg-mf")
    series = [pydicom.dcmread(p) for p in paths]
    source = as_multiframe(series, tmp_path / "source.dcm", [5, 2, 7, 0, 3, 6, 1, 4])
    if request.param == "per frame":
        shared = source.SharedFunctionalGroupsSequence[0]
        for frame in source.PerFrameFunctionalGroupsSequence:
            frame.PlaneOrientationSequence = copy.deepcopy(shared.PlaneOrientationSequence)
        del shared.PlaneOrientationSequence
    unchanged = copy.deepcopy(source)
    volume, slices = series_volume([source])
    check_source(slices)
    mask = np.zeros(volume.shape, bool)
    mask[2:9, 3:7, 1:6] = np.random.default_rng(2).random((7, 4, 5)) > 0.3
    path = tmp_path / "seg.dcm"
    anomaly_segmentation(slices, mask, "pixels", 0.5).save_as(path)
    return source, unchanged, volume, slices, mask, path


def test_a_seg_on_a_multi_frame_source_lies_on_its_frames(multiframe_seg):
    """Each SEG frame holds the mask slice at its position and references the source frame
    there; the source is left as it was."""
    source, unchanged, volume, slices, mask, path = multiframe_seg
    assert source == unchanged
    seg = hd.seg.segread(path)
    to_index = np.linalg.inv(LPS_TO_RAS @ volume.affine)  # LPS mm -> (column, row, slice)
    frames = source.PerFrameFunctionalGroupsSequence
    for n, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        index = to_index @ [*position, 1.0]
        np.testing.assert_allclose(index[:2], 0, atol=1e-3)
        np.testing.assert_array_equal(seg.pixel_array[n] > 0, mask[:, :, round(index[2])].T)
        (referenced,) = frame.DerivationImageSequence[0].SourceImageSequence
        assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
        there = frames[referenced.ReferencedFrameNumber - 1].PlanePositionSequence[0]
        np.testing.assert_allclose([float(v) for v in there.ImagePositionPatient], position)
    assert len(seg.PerFrameFunctionalGroupsSequence) == mask.any(axis=(0, 1)).sum()
    by_frame = seg.get_pixels_by_source_frame(
        source.SOPInstanceUID,
        source_frame_numbers=list(range(1, 9)),
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )[..., 0]
    np.testing.assert_array_equal(by_frame > 0, to_source_order(slices, mask.transpose(2, 1, 0)))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) absent")
def test_a_seg_on_a_multi_frame_source_passes_dciodvfy(multiframe_seg):
    path = multiframe_seg[-1]
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    assert not [line for line in result.stderr.splitlines() if line.startswith("Error")]
