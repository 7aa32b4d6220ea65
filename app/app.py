"""The application graph. ``compose()`` is the pipeline; each arrow is one stage-data class of
:mod:`operators.stages`, named by its port:

DICOM:  studies -> series selection -found-> volume -sources-> preprocess -standard-> screen
NIfTI:  volumes -------------------------------sources-> preprocess -standard-> screen
        screen -screened-> outputs -written-> report
"""

from __future__ import annotations

from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from app.settings import AppSettings
from cs3f.encoders import SliceEncoder
from operators.nifti_loader_operator import NiftiLoaderOperator
from operators.outputs_operator import OutputsOperator
from operators.preprocess_operator import PreprocessOperator
from operators.report_operator import ReportOperator
from operators.screen_operator import ScreenOperator
from operators.series_selector_operator import SeriesSelectorOperator
from operators.study_loader_operator import StudyLoaderOperator
from operators.volume_operator import VolumeOperator


class ScreeningApp(Application):
    """Screens a whole batch of studies for anomalies by comparing them with each other.

    ``work`` is the run's scratch folder (created and removed by the entry point).
    """

    name = "cs3f-screening"
    description = "Zero-shot 3D anomaly screening of a batch of studies (CS3F)"

    def __init__(
        self,
        input_folder: Path,
        output_folder: Path,
        work: Path,
        input_format: str,
        settings: AppSettings,
        encoder: SliceEncoder,
        run: dict,
    ):
        self.input_folder, self.output_folder = Path(input_folder), Path(output_folder)
        self.work, self.input_format = Path(work), input_format
        self.settings, self.encoder, self.run_info = settings, encoder, run
        self.report: ReportOperator | None = None
        super().__init__([__file__])

    def compose(self):
        s, once = self.settings, CountCondition(self, 1)
        if self.input_format == "nifti":
            sources = NiftiLoaderOperator(
                self, once, input_folder=self.input_folder, work=self.work, name="volumes"
            )
        else:
            studies = StudyLoaderOperator(
                self, once, input_folder=self.input_folder, must_load=False, name="studies"
            )
            select = SeriesSelectorOperator(
                self, rules=s.rules_json(), work=self.work, name="series_selection"
            )
            sources = VolumeOperator(self, name="volume")
            self.add_flow(studies, select, {("dicom_study_list", "dicom_study_list")})
            self.add_flow(select, sources, {("study_selected_series_list", "found")})
        saved = self.output_folder / "preprocessed" if s.save_preprocessed else None
        preprocess = PreprocessOperator(
            self, task=s.task, settings=s.preprocess, save_to=saved, name="preprocess"
        )
        screen = ScreenOperator(
            self,
            encoder=self.encoder,
            tokens=s.tokens,
            scoring=s.scoring,
            rules=s.screening,
            name="screen",
        )
        outputs = OutputsOperator(
            self,
            output_folder=self.output_folder,
            encoder_name=self.encoder.name,
            report_studies=s.report_studies,
            name="outputs",
        )
        self.report = ReportOperator(
            self,
            output_folder=self.output_folder,
            run=self.run_info,
            show_identifiers=s.show_identifiers,
            name="report",
        )
        self.add_flow(sources, preprocess, {("sources", "sources")})
        self.add_flow(preprocess, screen, {("standard", "standard")})
        self.add_flow(screen, outputs, {("screened", "screened")})
        self.add_flow(outputs, self.report, {("written", "written")})
