"""Selected series -> native volume with its affine (cs3f.dicom_volume), per study."""

from __future__ import annotations

from cs3f.dicom_volume import series_volume
from cs3f.volume import Volume
from operators.batch import Batch, Case
from operators.batch_stage import BatchStage


class VolumeOperator(BatchStage):
    """Builds each study's volume from its instances with exact geometry.

    The SDK's DICOMSeriesToVolumeOperator converts only the first study, and its affine takes the
    column spacing from PixelSpacing[0] (row spacing), so this calls the library instead.
    A study whose series has no stable UIDs or no regular grid fails with the reason.
    """

    def compute(self, op_input, op_output, context):
        batch: Batch = op_input.receive("batch")

        def convert(case: Case) -> None:
            datasets = [s.get_native_sop_instance() for s in case.series.get_sop_instances()]
            if (
                not case.row.study_instance_uid
                or not case.row.series_instance_uid
                or any(not ds.get("SOPInstanceUID") for ds in datasets)
            ):
                raise ValueError(
                    "Study/Series/SOP Instance UID missing: a SEG could not reference the source"
                )
            volume, case.slices = series_volume(datasets)
            case.source = Volume(batch.park(f"{case.tag}_source", volume.array), volume.affine)

        batch.each("volume", convert)
        op_output.emit(batch, "batch")
