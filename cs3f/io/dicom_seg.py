"""A binary DICOM Segmentation of the anomaly mask, on the source series' own frames (highdicom)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cs3f import __version__
from cs3f.io.outputs import atomic_path

__all__ = ["MANUFACTURER", "anomaly_segmentation", "save"]

MANUFACTURER = "cs3f screening"


def anomaly_segmentation(
    source_slices: Sequence[Dataset],
    mask: np.ndarray,
    encoder_name: str,
    threshold: float,
    series_number: int = 9901,
) -> hd.seg.Segmentation:
    """The SEG for ``mask`` (columns, rows, slices) of a series whose instances are ``source_slices``
    in slice order (as :func:`cs3f.io.dicom_volume.series_volume` returns them).

    The segment is SNOMED CT "Morphologically abnormal structure" / "Lesion", automatic, and its
    algorithm identification names CS3F, this version, the encoder and the voxel threshold.
    """
    frames = np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(bool)
    if frames.shape != (len(source_slices), source_slices[0].Rows, source_slices[0].Columns):
        raise ValueError(f"mask {mask.shape} does not fit the {len(source_slices)} source slices")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="CS3F zero-shot cross-subject anomaly scoring",
        family=codes.cid7162.ArtificialIntelligence,
        version=__version__,
        parameters={"encoder": encoder_name, "voxel_threshold": f"{threshold:.6g}"},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Anomaly",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    return hd.seg.Segmentation(
        source_images=list(source_slices),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="cs3f",
        software_versions=__version__,
        device_serial_number="none",
        series_description="CS3F anomaly",
        content_label="ANOMALY",
        content_description=f"CS3F anomaly mask, encoder {encoder_name}"[:64],
        omit_empty_frames=bool(frames.any()),
    )


def save(segmentation: hd.seg.Segmentation, path: Path) -> None:
    """Write ``segmentation`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        segmentation.save_as(tmp)
