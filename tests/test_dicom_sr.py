"""The result SR: highdicom reads back the score, percentile, flag and thresholds, the region's
volume and its reference to the SEG's segment; dciodvfy finds no error; and the UIDs every
derived object gets are the same for the same study, series, version, settings, selection and
reference, and differ when any of them does."""

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from cs3f.io.dicom_pmap import QUANTITY
from cs3f.io.dicom_seg import anomaly_segmentation
from cs3f.io.dicom_sr import FLAGGED, PERCENTILE, StudyResult, screening_report
from cs3f.io.dicom_volume import series_volume
from cs3f.io.result_uids import RESULTS, result_uids, results_seed
from cs3f_tools.cohort_dicom import write_series

RESULT = StudyResult(
    score=0.41,
    percentile=75.0,
    flagged=True,
    flag_threshold=0.39,
    voxel_threshold=0.3,
    anomaly_ml=1.25,
    reference="batch of 4 studies",
    encoder="histogram-p14",
)


@pytest.fixture()
def written(tmp_path):
    """(source slices, SEG, the SR read back from its file)."""
    image = np.random.default_rng(0).uniform(0, 1000, (12, 10, 8))
    tags = {"PatientName": "Doe^Jane", "PatientID": "P-1", "AccessionNumber": "A1"}
    paths = write_series(image, np.diag([1.0, 1.2, 1.5, 1.0]), tmp_path, tags, uid_seed="sr")
    slices = series_volume([pydicom.dcmread(p) for p in paths])[1]
    mask = np.zeros((12, 10, 8), bool)
    mask[3:6, 2:5, 1:4] = True
    uids = result_uids(results_seed("0.1.0", {"tokens": {"dim": 16}}, "batch", {}), "1.2.3", "4")
    seg = anomaly_segmentation(slices, mask, RESULT.encoder, 0.3, uids=uids["seg"])
    report = screening_report(seg, slices, RESULT, uids["sr"])
    report.save_as(tmp_path / "sr.dcm")
    return slices, seg, hd.sr.srread(tmp_path / "sr.dcm"), uids


def test_the_report_reads_back(written):
    slices, seg, report, uids = written
    assert report.SOPInstanceUID == uids["sr"].instance
    assert report.SeriesInstanceUID == uids["sr"].series
    assert report.StudyInstanceUID == slices[0].StudyInstanceUID == seg.StudyInstanceUID
    assert report.PatientID == "P-1" and report.CompletionFlag == "COMPLETE"
    (group,) = report.content.get_image_measurement_groups()
    values = {
        name.meaning: group.get_measurements(name=name)[0].value
        for name in (QUANTITY, PERCENTILE)
    }
    assert values == {QUANTITY.meaning: 0.41, PERCENTILE.meaning: 75.0}
    (flag,) = group.get_qualitative_evaluations(name=FLAGGED)
    assert flag.value == codes.SCT.Yes
    (region,) = report.content.get_volumetric_roi_measurement_groups()
    assert region.get_measurements(name=codes.SCT.Volume)[0].value == pytest.approx(1.25)
    segment = region.referenced_segment[0]
    assert segment.name == codes.DCM.ReferencedSegment
    assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert report.get_evidence_series()  # the SEG and the source series are its evidence


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) absent")
def test_the_report_passes_dciodvfy(written, tmp_path):
    result = subprocess.run(
        ["dciodvfy", str(tmp_path / "sr.dcm")], capture_output=True, text=True, check=False
    )
    assert not [line for line in result.stderr.splitlines() if line.startswith("Error")]


def test_derived_uids_follow_study_series_version_settings_selection_and_reference():
    def seed(version="0.1.0", dim=16, reference="batch", rules="ab") -> str:
        return results_seed(version, {"tokens": {"dim": dim}}, reference, {"rules": rules})

    first = result_uids(seed(), "1.2.3", "1.2.3.4")
    assert first == result_uids(seed(), "1.2.3", "1.2.3.4")
    others = [
        result_uids(seed(), "1.2.4", "1.2.3.4"),
        result_uids(seed(), "1.2.3", "1.2.3.5"),
        result_uids(seed(version="0.2.0"), "1.2.3", "1.2.3.4"),
        result_uids(seed(dim=32), "1.2.3", "1.2.3.4"),
        result_uids(seed(reference="bank:ab12"), "1.2.3", "1.2.3.4"),
        result_uids(seed(rules="cd"), "1.2.3", "1.2.3.4"),
    ]
    uids = {u for ids in [first, *others] for d in ids.values() for u in (d.series, d.instance)}
    assert len(uids) == 7 * 2 * len(RESULTS)  # all distinct
    for uid in uids:
        assert uid.startswith("2.25.") and len(uid) <= 64
        assert pydicom.uid.UID(uid).is_valid
