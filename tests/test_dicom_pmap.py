"""The score map as a DICOM Parametric Map and the mask as a SEG: highdicom reads both back onto
the source grid (single-frame and multi-frame sources), the values are the scores in score units,
and dciodvfy (where installed) reports no error."""

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import as_multiframe, on_grid

from cs3f.io.dicom_pmap import SCORE_UNIT, score_map
from cs3f.io.dicom_seg import anomaly_segmentation, save
from cs3f.io.dicom_volume import series_volume
from cs3f_tools.cohort_dicom import write_series

SHAPE = (12, 10, 8)
THRESHOLD = 0.3


@pytest.fixture(params=["single-frame", "multi-frame"])
def source(request, tmp_path):
    """(volume, slices) of a small oblique series, as instances or one multi-frame instance."""
    image = np.random.default_rng(3).uniform(0, 1000, SHAPE)
    affine = np.array([[0, 0, 2.0, -8], [1.1, 0, 0, 4], [0, -0.9, 0, 20], [0, 0, 0, 1]])
    tags = {"PatientName": "Doe^Jane", "PatientID": "P-1", "AccessionNumber": "A1"}
    paths = write_series(image, affine, tmp_path / "series", tags, uid_seed="pmap")
    series = [pydicom.dcmread(p) for p in paths]
    if request.param == "multi-frame":
        series = [as_multiframe(series, tmp_path / "source.dcm", [5, 2, 7, 0, 3, 6, 1, 4])]
    return series_volume(series)


def test_map_and_seg_read_back_onto_the_source_grid(source, tmp_path):
    volume, slices = source
    scores = np.random.default_rng(4).uniform(0, 1, SHAPE).astype(np.float32)
    mask = scores > THRESHOLD
    save(score_map(slices, scores, "pixels", THRESHOLD), tmp_path / "pm.dcm")
    save(anomaly_segmentation(slices, mask, "pixels", THRESHOLD), tmp_path / "seg.dcm")

    pm = hd.imread(tmp_path / "pm.dcm")
    back = on_grid(pm.get_volume(), volume.affine, SHAPE)
    np.testing.assert_array_equal(back, scores)  # float32 pixels: the scores exactly
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == SCORE_UNIT.value
    assert (float(mapping.RealWorldValueSlope), float(mapping.RealWorldValueIntercept)) == (1, 0)
    voi = pm.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    low = float(voi.WindowCenter) - float(voi.WindowWidth) / 2
    assert low == pytest.approx(THRESHOLD)  # the window starts where the SEG does
    anatomy = pm.SharedFunctionalGroupsSequence[0].get("FrameAnatomySequence")
    assert pm.get("BodyPartExamined") == "BRAIN" or anatomy[0].FrameLaterality == "U"

    seg = hd.seg.segread(tmp_path / "seg.dcm")
    back = on_grid(seg.get_volume(combine_segments=True), volume.affine, SHAPE)
    np.testing.assert_array_equal(back > 0, mask)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) absent")
def test_the_parametric_map_passes_dciodvfy(source, tmp_path):
    _, slices = source
    path = tmp_path / "pm.dcm"
    save(score_map(slices, np.full(SHAPE, 0.1, np.float32), "pixels", THRESHOLD), path)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    assert not [line for line in result.stderr.splitlines() if line.startswith("Error")]
