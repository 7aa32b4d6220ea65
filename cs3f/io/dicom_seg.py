"""A binary DICOM Segmentation of the anomaly mask, on the source series' own frames (highdicom)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import config, valuerep
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cs3f import __version__
from cs3f.io.dicom_volume import number_of_frames, shallow_copy, slice_count, to_source_order
from cs3f.io.outputs import atomic_path
from cs3f.io.result_uids import DerivedUIDs

__all__ = [
    "MANUFACTURER",
    "SourceError",
    "anomaly_segmentation",
    "check_source",
    "derived_instance",
    "save",
    "shared_orientation",
    "source_frames",
]

MANUFACTURER = "cs3f screening"
COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
"""Attributes of the first source instance that the SEG copies."""
REFERENCED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
"""Attributes of every source instance that the SEG references."""


class SourceError(ValueError):
    """The source series cannot carry a valid SEG (the message names attributes, never values)."""


def _invalid(ds: Dataset, keyword: str) -> bool:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return False
    element = ds[keyword]
    try:
        valuerep.validate_value(element.VR, element.value, config.RAISE)
        if element.VR in ("DA", "DT", "TM"):  # the format may pass where the date does not
            getattr(valuerep, element.VR)(element.value)
    except (TypeError, ValueError):
        return True
    return False


def check_source(source_slices: Sequence[Dataset]) -> None:
    """Refuse now, before any expensive work, a series whose SEG would be invalid or could not
    be built at the end of the run: a malformed attribute the SEG copies (e.g. PatientBirthDate)
    or a UID it references that is not a valid UID (e.g. holds '/').

    Raises:
        SourceError: naming the attributes; a catch-all dry run (the SEG of an empty mask,
            about 0.5 s for 100 slices) names the error type only.
    """
    bad = {k for k in COPIED if _invalid(source_slices[0], k)}
    bad |= {k for ds in source_slices for k in REFERENCED if _invalid(ds, k)}
    if bad:
        raise SourceError(
            f"{', '.join(sorted(bad))} of the source would not validate in a DICOM SEG; correct "
            "it at the source (the value is not repeated here)"
        )
    shape = (source_slices[0].Columns, source_slices[0].Rows, slice_count(source_slices))
    try:
        anomaly_segmentation(source_slices, np.zeros(shape, bool), "check", 0.0)
    except Exception as exc:  # any failure here would have failed the SEG at the end
        raise SourceError(
            f"a DICOM SEG cannot be built on this series ({type(exc).__name__})"
        ) from exc


def shared_orientation(source_slices: Sequence[Dataset]) -> list[Dataset]:
    """The source as highdicom's SEG takes it: highdicom looks for a multi-frame source's
    orientation in its shared functional groups only, so one that each frame carries (as some
    scanners write it; one orientation for all, as the reader checked) is put there, on a copy
    that shares the elements. The source itself is unchanged."""
    source = source_slices[0]
    shared = source.get("SharedFunctionalGroupsSequence") or [Dataset()]
    if number_of_frames(source) == 1 or "PlaneOrientationSequence" in shared[0]:
        return list(source_slices)
    first = source.PerFrameFunctionalGroupsSequence[0]
    groups = shallow_copy(shared[0])
    groups.PlaneOrientationSequence = first.PlaneOrientationSequence
    view = shallow_copy(source)
    view.pop("SharedFunctionalGroupsSequence", None)  # set in place, the source's would change
    view.SharedFunctionalGroupsSequence = [groups]
    return [view]


def source_frames(source_slices: Sequence[Dataset], array: np.ndarray) -> np.ndarray:
    """``array`` (columns, rows, slices), on the grid of ``source_slices`` in slice order, as
    the (frames, rows, columns) stack of a derived object whose frames follow the source's.

    Raises:
        ValueError: ``array`` does not fit the source.
    """
    frames = np.ascontiguousarray(array.transpose(2, 1, 0))
    count = slice_count(source_slices)
    if frames.shape != (count, source_slices[0].Rows, source_slices[0].Columns):
        raise ValueError(f"array {array.shape} does not fit the {count} source slices")
    return to_source_order(source_slices, frames)


def derived_instance(
    source_slices: Sequence[Dataset], series_number: int, uids: DerivedUIDs | None = None
) -> dict:
    """The arguments that every object this program derives from ``source_slices`` (a SEG, a
    Parametric Map) passes to highdicom: the source, its UIDs (``uids``, or new ones), the
    series number and this program as the equipment."""
    return {
        "source_images": shared_orientation(source_slices),
        "series_instance_uid": uids.series if uids else hd.UID(),
        "series_number": series_number,
        "sop_instance_uid": uids.instance if uids else hd.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": "cs3f",
        "software_versions": __version__,
        "device_serial_number": "none",
    }


def anomaly_segmentation(
    source_slices: Sequence[Dataset],
    mask: np.ndarray,
    encoder_name: str,
    threshold: float,
    series_number: int = 9901,
    uids: DerivedUIDs | None = None,
) -> hd.seg.Segmentation:
    """The SEG for ``mask`` (columns, rows, slices) of a series whose instances are ``source_slices``
    in slice order, or one multi-frame instance (as :func:`cs3f.io.dicom_volume.series_volume`
    returns them). The SEG's frames follow the source's (instances, or frames of the multi-frame
    instance), so that each references the source frame it lies on.

    The segment is SNOMED CT "Morphologically abnormal structure" / "Lesion", automatic, and its
    algorithm identification names CS3F, this version, the encoder and the voxel threshold.
    ``uids``: the SEG's series and instance UIDs (new ones if None).
    """
    frames = source_frames(source_slices, mask.astype(bool))
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
        **derived_instance(source_slices, series_number, uids),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_description="CS3F anomaly",
        content_label="ANOMALY",
        content_description=f"CS3F anomaly mask, encoder {encoder_name}"[:64],
        omit_empty_frames=bool(frames.any()),
    )


def save(dataset: Dataset, path: Path) -> None:
    """Write ``dataset`` (a SEG, a Parametric Map) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        dataset.save_as(tmp)
