"""DICOM intake holds headers only: the study loader leaves every instance's pixel data on disk
(the volume stage reads a selected series' pixels once, for its conversion)."""

import monai.deploy.operators.dicom_data_loader_operator as sdk_loader
import numpy as np
import pydicom
from monai.deploy.core import Application

from cs3f.io.dicom_volume import series_volume
from cs3f_tools.cohort_dicom import write_series
from operators.study_loader_operator import StudyLoaderOperator


def test_the_loader_reads_headers_and_leaves_pixels_on_disk(tmp_path):
    image = np.random.default_rng(1).integers(0, 4000, (40, 36, 9)).astype(np.float64)
    for n in range(2):  # 2.8 kB of pixels per slice: above the loader's deferral size
        write_series(image + n, np.eye(4), tmp_path / f"s{n}", {"PatientID": f"P{n}"}, f"in{n}")
    loader = StudyLoaderOperator(Application(), input_folder=tmp_path, must_load=False, name="s")
    loader.intake = {"files": 0, "skipped_files": 0, "without_study_uid": {}}
    loader.series_files = {}
    studies = loader.load_data_to_studies(tmp_path)
    assert len(studies) == 2 and loader.intake["files"] == 18
    assert sdk_loader.dcmread is pydicom.dcmread  # the SDK's reader is itself again
    for study in studies:
        (series,) = study.get_all_series()
        headers = [s.get_native_sop_instance() for s in series.get_sop_instances()]
        assert all(ds.get_item("PixelData", keep_deferred=True).value is None for ds in headers)
        volume, _ = series_volume(headers)
        full, _ = series_volume([pydicom.dcmread(ds.filename) for ds in headers])
        np.testing.assert_array_equal(volume.array, full.array)
