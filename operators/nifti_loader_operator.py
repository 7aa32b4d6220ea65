"""A folder of NIfTI volumes, one per subject (research input) -> Batch."""

from __future__ import annotations

from pathlib import Path

from monai.deploy.core import Operator, OperatorSpec

from cs3f.nifti_io import find_nifti, load_nifti, subject_name
from cs3f.outputs import StudyRow, sanitise
from cs3f.volume import Volume
from operators.batch import Batch, Case


class NiftiLoaderOperator(Operator):
    """Each ``*.nii[.gz]`` directly in the input folder is a study named after the file."""

    def __init__(self, fragment, *args, input_folder: Path, work: Path, **kwargs):
        self.input_folder, self.work = Path(input_folder), work
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.output("batch")

    def compute(self, op_input, op_output, context):
        paths = find_nifti(self.input_folder)
        batch = Batch("nifti", self.work, intake={"files": len(paths), "skipped_files": 0})
        for n, path in enumerate(paths):
            name = subject_name(path)
            batch.cases.append(
                Case(
                    StudyRow(key=sanitise(name, f"subject-{n:04d}"), study_instance_uid=name),
                    path=path,
                )
            )

        def load(case: Case) -> None:
            volume = load_nifti(case.path)
            case.source = Volume(batch.park(f"{case.tag}_source", volume.array), volume.affine)

        batch.each("load", load)
        op_output.emit(batch, "batch")
