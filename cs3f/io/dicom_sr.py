"""A study's screening result as a DICOM Comprehensive SR (highdicom), for the PACS.

Why an SR and not an encapsulated PDF: a PACS and a viewer (OHIF, 3D Slicer, a worklist) read an
SR's numbers and codes, so the score, percentile and flag can sort a worklist or be shown next to
the images, and the SR references the SEG's segment and the source series it was made on, so
the result and its region stay linked in the archive. A PDF is a picture of the same numbers
that only a person can read. highdicom builds and validates the SR.

The document is a TID 1500 Measurement Report, observed by this program as a device, with two
measurement groups sharing one algorithm identification (CS3F, its version, the encoder, the
reference and the thresholds):

- the study (TID 1501, tracking identifier "CS3F study result"): the anomaly score (score
  units), its percentile among the reference's patient scores (%), the flag threshold and the
  voxel threshold (score units), and the qualitative evaluation "Flagged for review": Yes / No;
- the anomaly region (TID 1411, "CS3F anomaly region"): the SEG's segment 1, with its volume
  in ml, of finding type Lesion in Morphologically abnormal structure, as the SEG labels it.

DICOM has no codes for these quantities, so they are codes of this program's own scheme
``99CS3F`` (as the score map's quantity is); the units are UCUM.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cs3f import __version__
from cs3f.io.dicom_pmap import QUANTITY, SCORE_UNIT
from cs3f.io.dicom_seg import MANUFACTURER
from cs3f.io.result_uids import DerivedUIDs, derived_uid

__all__ = ["FLAGGED", "PERCENTILE", "StudyResult", "screening_report"]

PROCEDURE = Code("SCREENING", "99CS3F", "CS3F anomaly screening")
PERCENTILE = Code("PERCENTILE", "99CS3F", "Percentile among the reference scores")
FLAG_THRESHOLD = Code("FLAG_THRESHOLD", "99CS3F", "CS3F flag threshold")
VOXEL_THRESHOLD = Code("VOXEL_THRESHOLD", "99CS3F", "CS3F voxel threshold")
FLAGGED = Code("FLAGGED", "99CS3F", "Flagged for review")
PERCENT = Code("%", "UCUM", "percent")
MILLILITRE = Code("mL", "UCUM", "milliliter")
DEVICE_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'cs3f screening device').int}"
"""The Device Observer UID of this program (the same in every report)."""


@dataclass(frozen=True)
class StudyResult:
    """What the SR reports about one study.

    Attributes:
        score: the patient score (score units: a distance between feature vectors).
        percentile: share of the reference's patient scores <= ``score``, in %.
        flagged: whether the score is above the flag threshold.
        flag_threshold: the flag threshold (score units), ``None`` when the reference's scores
            do not spread (nothing can be flagged).
        voxel_threshold: the SEG's voxel threshold (score units).
        anomaly_ml: the SEG's volume, in ml.
        reference: what the study was compared with, e.g. "batch of 30 studies".
        encoder: the encoder's name.
    """

    score: float
    percentile: float
    flagged: bool
    flag_threshold: float | None
    voxel_threshold: float
    anomaly_ml: float
    reference: str
    encoder: str


def _measurement(name: Code, value: float, unit: Code) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit)


def screening_report(
    seg: Dataset,
    source_slices: Sequence[Dataset],
    result: StudyResult,
    uids: DerivedUIDs | None = None,
    series_number: int = 9903,
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR of ``result`` for the study of ``seg`` (the study's anomaly SEG,
    :func:`cs3f.io.dicom_seg.anomaly_segmentation`), made on ``source_slices``; patient and
    study come from the SEG. ``uids``: the SR's series and instance UIDs (new ones if None);
    the tracking identifiers derive from the instance UID, so the same UIDs give the same
    document.
    """
    instance = uids.instance if uids else hd.UID()
    parameters = [
        f"encoder={result.encoder}",
        f"reference={result.reference}",
        f"voxel_threshold={result.voxel_threshold:.6g}",
    ]
    if result.flag_threshold is not None:
        parameters.append(f"flag_threshold={result.flag_threshold:.6g}")
    algorithm = hd.sr.AlgorithmIdentification(
        name="CS3F zero-shot cross-subject anomaly scoring",
        version=__version__,
        parameters=parameters,
    )
    measurements = [
        _measurement(QUANTITY, result.score, SCORE_UNIT),
        _measurement(PERCENTILE, result.percentile, PERCENT),
        _measurement(VOXEL_THRESHOLD, result.voxel_threshold, SCORE_UNIT),
    ]
    if result.flag_threshold is not None:
        measurements.append(_measurement(FLAG_THRESHOLD, result.flag_threshold, SCORE_UNIT))
    study = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(f"{instance}/study result"), identifier="CS3F study result"
        ),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(FLAGGED, codes.SCT.Yes if result.flagged else codes.SCT.No)
        ],
    )
    region = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(f"{instance}/anomaly region"), identifier="CS3F anomaly region"
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=1,
            source_series=hd.sr.SourceSeriesForSegmentation(source_slices[0].SeriesInstanceUID),
        ),
        finding_type=codes.SCT.Lesion,
        finding_category=codes.SCT.MorphologicallyAbnormalStructure,
        algorithm_id=algorithm,
        measurements=[_measurement(codes.SCT.Volume, result.anomaly_ml, MILLILITRE)],
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=DEVICE_UID, name="CS3F", manufacturer_name=MANUFACTURER, model_name="cs3f"
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=PROCEDURE,
        imaging_measurements=[study, region],
    )
    return hd.sr.ComprehensiveSR(
        evidence=[seg, *source_slices],
        content=report[0],
        series_instance_uid=uids.series if uids else hd.UID(),
        series_number=series_number,
        sop_instance_uid=instance,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="CS3F anomaly result",
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                designator="99CS3F", name="CS3F screening codes (private)"
            )
        ],
        manufacturer_model_name="cs3f",
        software_versions=__version__,
    )
