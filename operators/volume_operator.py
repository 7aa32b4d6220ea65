"""StudiesFound -> SourceVolumes: each selected series as a native volume with its affine."""

from __future__ import annotations

from cs3f.io.dicom_seg import check_source
from cs3f.io.dicom_volume import series_volume
from cs3f.volume import Volume
from operators.stage import Stage
from operators.stages import FoundStudy, SourceStudy, SourceVolumes, StudiesFound


class VolumeOperator(Stage):
    """Builds each study's volume from its instances with exact geometry (cs3f.io.dicom_volume).

    The SDK's DICOMSeriesToVolumeOperator converts only the first study, and its affine takes the
    column spacing from PixelSpacing[0] (row spacing), so this calls the library instead.
    A study whose series has no stable UIDs or no regular grid, or that could not carry a valid
    SEG (:func:`cs3f.io.dicom_seg.check_source`), fails here with the reason.
    """

    receives, emits = "found", "sources"

    def run(self, found: StudiesFound) -> SourceVolumes:
        ledger = found.ledger

        def convert(study: FoundStudy) -> SourceStudy:
            row = study.row
            datasets = [s.get_native_sop_instance() for s in study.series.get_sop_instances()]
            if (
                not row.study_instance_uid
                or not row.series_instance_uid
                or any(not ds.get("SOPInstanceUID") for ds in datasets)
            ):
                raise ValueError(
                    "Study/Series/SOP Instance UID missing: a SEG could not reference the source"
                )
            volume, slices = series_volume(datasets)
            check_source(slices)  # a SEG it could not carry fails the study now, not at the end
            source = Volume(ledger.park(row, "source", volume.array), volume.affine)
            return SourceStudy(row, source, slices)

        studies = ledger.each("volume", found.studies, lambda s: s.row, convert)
        return SourceVolumes(ledger, studies)
