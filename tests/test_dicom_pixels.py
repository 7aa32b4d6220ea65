"""DICOM pixels as scanners and PACS send them: every compressed transfer syntax decodes to the
pixels of the uncompressed original (reference files: pydicom's own test data, PyPI
``pydicom-data``) and a compressed series is the same volume; signed, 12-bit and rescaled
values, MONOCHROME1 and colour are read right or refused with a reason; a compressed multi-frame
instance is the same volume too; headers read with their pixels left on disk (as intake reads
them) give the same volume and never come to hold the pixels."""

import numpy as np
import pydicom
import pytest
from conftest import as_multiframe
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from cs3f.io.dicom_pmap import score_map
from cs3f.io.dicom_seg import anomaly_segmentation
from cs3f.io.dicom_volume import PixelError, series_volume
from cs3f_tools.cohort_dicom import write_series


@pytest.mark.parametrize(
    "compressed, original",
    [
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # JPEG 2000 lossless, 16-bit
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),  # JPEG 2000, 10 frames
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),  # JPEG-LS lossless
        ("emri_small_RLE.dcm", "emri_small.dcm"),  # RLE lossless
        ("emri_small_big_endian.dcm", "emri_small.dcm"),  # explicit VR big endian
    ],
)
def test_each_transfer_syntax_decodes_to_the_original_pixels(compressed, original):
    ours = pydicom.dcmread(get_testdata_file(compressed))
    reference = pydicom.dcmread(get_testdata_file(original))
    assert ours.file_meta.TransferSyntaxUID != reference.file_meta.TransferSyntaxUID
    np.testing.assert_array_equal(ours.pixel_array, reference.pixel_array)


@pytest.mark.parametrize("name", ["JPGLosslessP14SV1_1s_1f_8b.dcm", "image_dfl.dcm"])
def test_jpeg_lossless_sv1_and_deflate_decode(name):
    """No uncompressed twin ships for these two; they must decode to a full image."""
    ds = pydicom.dcmread(get_testdata_file(name))
    pixels = ds.pixel_array
    assert pixels.shape == (ds.Rows, ds.Columns) and pixels.std() > 0


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_a_compressed_series_is_the_same_volume(tmp_path, syntax):
    image = (
        np.random.default_rng(2).integers(0, 4000, (64, 48, 9)).astype(np.float64)
    )  # J2K: >= 32 px
    affine = np.array([[0.9, 0, 0, -10], [0, 1.1, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    paths = write_series(image, affine, tmp_path / "raw", {"PatientID": "P"}, uid_seed="ts")
    reference, _ = series_volume([pydicom.dcmread(p) for p in paths])
    compressed = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(tmp_path / f"c_{path.name}")
        compressed.append(pydicom.dcmread(tmp_path / f"c_{path.name}"))
    assert compressed[0].file_meta.TransferSyntaxUID == syntax
    volume, _ = series_volume(compressed)
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_array_equal(volume.affine, reference.affine)


def test_a_deflated_series_is_the_same_volume(tmp_path):
    image = np.random.default_rng(3).integers(0, 4000, (12, 10, 8)).astype(np.float64)
    paths = write_series(image, np.eye(4), tmp_path / "raw", {"PatientID": "P"}, uid_seed="dfl")
    reference, _ = series_volume([pydicom.dcmread(p) for p in paths])
    deflated = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(tmp_path / f"d_{path.name}", enforce_file_format=True)
        deflated.append(pydicom.dcmread(tmp_path / f"d_{path.name}"))
    assert deflated[0].file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(series_volume(deflated)[0].array, reference.array)


def _series(tmp_path, name="raw"):
    image = np.random.default_rng(4).integers(0, 4000, (12, 10, 8)).astype(np.float64)
    paths = write_series(image, np.eye(4), tmp_path / name, {"PatientID": "P"}, uid_seed=name)
    return [pydicom.dcmread(p) for p in paths]


def test_signed_12_bit_values_with_a_rescale_are_modality_values(tmp_path):
    slices = _series(tmp_path)
    raw = []
    for ds in slices:
        stored = ds.pixel_array.astype(np.int16) - 2048  # signed, within 12 bits
        raw.append(stored)
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 12, 11
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.PixelData = stored.tobytes()
    volume, ordered = series_volume(slices)
    expected = np.stack([r.astype(np.float32) * 2 - 1024 for r in raw]).transpose(2, 1, 0)
    assert ordered == slices  # written in slice order
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.array.min() < -1024  # negative stored values survived as negative


def test_monochrome1_is_inverted_on_one_scale_for_the_whole_volume(tmp_path):
    slices = _series(tmp_path)
    reference, _ = series_volume(slices)
    for ds in slices:
        ds.PhotometricInterpretation = "MONOCHROME1"
    inverted, _ = series_volume(slices)
    array = reference.array
    np.testing.assert_array_equal(inverted.array, array.max() + array.min() - array)


def test_colour_images_are_refused_with_a_reason(tmp_path):
    slices = _series(tmp_path)
    for ds in slices:
        grey = (ds.pixel_array // 16).astype(np.uint8)
        ds.PixelData = np.stack([grey] * 3, axis=-1).tobytes()
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    with pytest.raises(PixelError, match="colour images .3 samples per pixel, RGB."):
        series_volume(slices)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_a_compressed_multi_frame_instance_is_the_same_volume(tmp_path, syntax):
    """One multi-frame instance (Legacy Converted Enhanced MR, frames in reverse slice order)
    decodes frame by frame (highdicom) to the volume of the single-frame series."""
    image = np.random.default_rng(5).integers(0, 4000, (64, 48, 9)).astype(np.float64)
    paths = write_series(image, np.eye(4), tmp_path / "raw", {"PatientID": "P"}, uid_seed="mf")
    series = [pydicom.dcmread(p) for p in paths]
    reference, _ = series_volume(series)
    enhanced = as_multiframe(series, tmp_path / "mf.dcm", list(range(9))[::-1])
    enhanced.compress(syntax)
    enhanced.save_as(tmp_path / "compressed.dcm")
    compressed = pydicom.dcmread(tmp_path / "compressed.dcm")
    assert compressed.file_meta.TransferSyntaxUID == syntax
    volume, _ = series_volume([compressed])
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-6)


def _deferred(ds):
    """Whether the instance's pixel data is still on disk (read with defer_size, never loaded)."""
    return ds.get_item("PixelData", keep_deferred=True).value is None


def test_headers_with_deferred_pixels_give_the_same_volume_and_keep_no_pixels(tmp_path):
    """Intake reads headers only (pixels deferred): the volume is the full read's, and the
    headers the later stages keep (and the SEG and map built on them) still hold no pixels."""
    image = np.random.default_rng(6).integers(0, 4000, (40, 36, 9)).astype(np.float64)
    affine = np.array([[0.9, 0, 0, -10], [0, 1.1, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    tags = {"PatientName": "Doe^Jane", "PatientID": "P-1", "AccessionNumber": "A1"}
    paths = write_series(image, affine, tmp_path / "raw", tags, uid_seed="defer")
    reference, _ = series_volume([pydicom.dcmread(p) for p in paths])
    headers = [pydicom.dcmread(p, defer_size=1024) for p in paths]
    assert all(_deferred(ds) for ds in headers)
    volume, slices = series_volume(headers)
    np.testing.assert_array_equal(volume.array, reference.array)
    mask = volume.array > np.median(volume.array)
    anomaly_segmentation(slices, mask, "pixels", 0.5)
    score_map(slices, volume.array, "pixels", 0.5)
    assert all(_deferred(ds) for ds in headers)

    enhanced = as_multiframe([pydicom.dcmread(p) for p in paths], tmp_path / "mf.dcm")
    enhanced.save_as(tmp_path / "mf.dcm")
    header = pydicom.dcmread(tmp_path / "mf.dcm", defer_size=1024)
    multiframe, _ = series_volume([header])
    np.testing.assert_array_equal(multiframe.array, reference.array)
    assert _deferred(header)
