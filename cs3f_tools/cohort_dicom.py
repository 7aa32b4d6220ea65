"""A volume written as one MR series of single-frame DICOM instances on its own geometry, with
UIDs derived from a seed, as the synthetic cohort stores its studies."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cs3f.io.dicom_volume import LPS_TO_RAS
from cs3f.io.outputs import atomic_path

__all__ = ["write_series"]


def write_series(
    image: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    tags: dict,
    uid_seed: str,
    descending: bool = False,
) -> list[Path]:
    """Write ``image`` (I, J, K, values >= 0) on ``affine`` (RAS) as single-frame MR instances.

    Instances are numbered along K, or against it when ``descending`` (the scanner acquired the
    slices the other way); the geometry is the same either way.

    ``tags`` sets patient/study attributes (PatientName, PatientID, AccessionNumber, ...).
    UIDs derive from ``uid_seed``, so the same seed writes the same UIDs.
    """
    lps = LPS_TO_RAS @ affine  # the flip is its own inverse: RAS -> LPS
    step = np.linalg.norm(lps[:3, :3], axis=0)
    row_cosine, col_cosine = lps[:3, 0] / step[0], lps[:3, 1] / step[1]
    pixels = np.clip(np.round(image), 0, 65535).astype(np.uint16)
    study_uid = generate_uid(entropy_srcs=[uid_seed, "study"])
    series_uid = generate_uid(entropy_srcs=[uid_seed, "series"])
    frame_uid = generate_uid(entropy_srcs=[uid_seed, "frame"])
    date = datetime.date(2026, 1, 1).strftime("%Y%m%d")
    paths = []
    for k in range(image.shape[2]):
        number = image.shape[2] - k if descending else k + 1
        sop_uid = generate_uid(entropy_srcs=[uid_seed, "instance", str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.ReferringPhysicianName, ds.StudyID = "", "1"
        ds.StudyDescription, ds.SeriesDescription = "Brain MRI (synthetic)", "T1 3D (synthetic)"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, number
        ds.BodyPartExamined = "BRAIN"
        ds.PatientPosition = "HFS"
        ds.Manufacturer = "cs3f synthetic cohort"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "SP", ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 2000, 3, 1
        ds.MagneticFieldStrength = 3
        ds.ImagingFrequency = 123.2
        ds.ImagedNucleus = "1H"
        ds.SliceThickness = f"{step[2]:.4f}"
        ds.PixelSpacing = [f"{step[1]:.6f}", f"{step[0]:.6f}"]  # row spacing, column spacing
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_cosine, *col_cosine)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ [0, 0, k, 1])[:3]]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = image.shape[1], image.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        for key, value in tags.items():
            setattr(ds, key, value)
        path = folder / f"{number:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths
