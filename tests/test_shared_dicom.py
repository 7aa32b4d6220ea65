"""Real DICOM from ../shared/data: geometry against dcm2niix, and series selection."""

import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA

from app.__main__ import main
from cs3f.io.dicom_volume import series_volume

DICOM = SHARED_DATA / "dicom"
pytestmark = pytest.mark.skipif(not DICOM.is_dir(), reason="../shared/data absent")
SERIES = [f"decubitus/{p}" for p in ("HFS", "HFP", "HFDL", "HFDR")] + ["ct_abdomen"]


def _t1(folder):
    return (
        next(p for p in folder.iterdir() if p.is_dir() and "t1" in p.name)
        if (folder.name != "ct_abdomen")
        else folder
    )


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix (Debian) absent")
@pytest.mark.parametrize("name", SERIES)
def test_volume_and_affine_agree_with_dcm2niix(name, tmp_path):
    folder = _t1(DICOM / name)
    subprocess.run(
        ["dcm2niix", "-z", "y", "-b", "n", "-f", "ref", "-o", str(tmp_path), str(folder)],
        check=True,
        capture_output=True,
    )
    reference = nib.as_closest_canonical(nib.load(tmp_path / "ref.nii.gz"))
    volume, _ = series_volume([pydicom.dcmread(p) for p in sorted(folder.iterdir())])
    ours = nib.as_closest_canonical(nib.Nifti1Image(volume.array, volume.affine))
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-3)
    np.testing.assert_array_equal(ours.get_fdata(), reference.get_fdata())


def test_decubitus_studies_yield_t1_and_ct_is_skipped(tmp_path):
    code = main(
        [
            "-i",
            str(DICOM),
            "-o",
            str(tmp_path / "out"),
            "--encoder",
            "pixels",
            "--set",
            "preprocess.size=112",
        ]
    )
    assert code == 0
    rows = json.loads((tmp_path / "out" / "scores.json").read_text())["studies"]
    scored = [r for r in rows if r["status"] == "scored"]
    assert len(scored) == 4
    for row in scored:
        t1 = _t1(
            next(
                p
                for p in (DICOM / "decubitus").iterdir()
                if row["series_instance_uid"]
                in {
                    pydicom.dcmread(
                        next(_t1(p).iterdir()), stop_before_pixels=True
                    ).SeriesInstanceUID
                }
            )
        )
        assert "t1" in t1.name  # never the DWI series
    skipped = [r for r in rows if r["status"] != "scored"]
    assert len(skipped) == 1 and skipped[0]["status"] == "skipped"
    assert "StudyInstanceUID" in skipped[0]["reason"]
