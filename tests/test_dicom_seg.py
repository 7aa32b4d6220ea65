"""The SEG pre-flight: a series that could not carry a valid SEG is refused when it is read,
naming the attribute and never its value."""

import numpy as np
import pydicom
import pytest

from cs3f.io.dicom_seg import SourceError, anomaly_segmentation, check_source
from cs3f.io.dicom_volume import series_volume
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
