"""A folder of NIfTI volumes, one per subject (research input) -> SourceVolumes."""

from __future__ import annotations

from pathlib import Path

from cs3f.io.nifti_io import find_nifti, load_nifti, subject_name
from cs3f.io.outputs import StudyRow, study_keys
from cs3f.volume import Volume
from operators.stage import Stage
from operators.stages import Ledger, SourceStudy, SourceVolumes, register


class NiftiLoaderOperator(Stage):
    """Each ``*.nii[.gz]`` directly in the input folder is a study named after the file."""

    emits = "sources"

    def __init__(self, fragment, *args, input_folder: Path, work: Path, **kwargs):
        self.input_folder, self.work = Path(input_folder), work
        super().__init__(fragment, *args, **kwargs)

    def run(self, _: None) -> SourceVolumes:
        paths = find_nifti(self.input_folder)
        ledger = Ledger("nifti", self.work, intake={"files": len(paths), "skipped_files": 0})
        names = [subject_name(path) for path in paths]
        for name, key in zip(names, study_keys(names, "subject"), strict=True):
            ledger.rows.append(StudyRow(key=key, study_instance_uid=name))
            register(ledger.rows[-1])

        def load(item: tuple[StudyRow, Path]) -> SourceStudy:
            row, path = item
            volume = load_nifti(path)
            return SourceStudy(row, Volume(ledger.park(row, "source", volume.array), volume.affine))

        studies = ledger.each("load", list(zip(ledger.rows, paths)), lambda item: item[0], load)
        return SourceVolumes(ledger, studies)
