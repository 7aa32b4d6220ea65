"""The application graph. ``compose()`` is the pipeline:

DICOM:  studies -> series selection -> volume -> preprocess -> tokenize -> score -> outputs -> report
NIfTI:  volumes --------------------------------> preprocess -> tokenize -> score -> outputs -> report
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from app.settings import AppSettings
from cs3f.encoders import SliceEncoder
from operators.nifti_loader_operator import NiftiLoaderOperator
from operators.outputs_operator import OutputsOperator
from operators.preprocess_operator import PreprocessOperator
from operators.report_operator import ReportOperator
from operators.score_operator import ScoreOperator
from operators.series_selector_operator import SeriesSelectorOperator
from operators.study_loader_operator import StudyLoaderOperator
from operators.tokenize_operator import TokenizeOperator
from operators.volume_operator import VolumeOperator


class ScreeningApp(Application):
    """Screens a whole batch of studies for anomalies by comparing them with each other."""

    name = "cs3f-screening"
    description = "Zero-shot 3D anomaly screening of a batch of studies (CS3F)"

    def __init__(
        self,
        input_folder: Path,
        output_folder: Path,
        input_format: str,
        settings: AppSettings,
        encoder: SliceEncoder,
        run: dict,
    ):
        self.input_folder, self.output_folder = Path(input_folder), Path(output_folder)
        self.input_format, self.settings, self.encoder, self.run_info = (
            input_format,
            settings,
            encoder,
            run,
        )
        self.report: ReportOperator | None = None
        super().__init__([__file__])

    def compose(self):
        s = self.settings
        work = Path(tempfile.mkdtemp(prefix=".work-", dir=self.output_folder))
        if self.input_format == "nifti":
            start = NiftiLoaderOperator(
                self,
                CountCondition(self, 1),
                input_folder=self.input_folder,
                work=work,
                name="volumes",
            )
        else:
            studies = StudyLoaderOperator(
                self,
                CountCondition(self, 1),
                input_folder=self.input_folder,
                must_load=False,
                name="studies",
            )
            select = SeriesSelectorOperator(
                self, rules=s.rules_json(), work=work, name="series_selection"
            )
            start = VolumeOperator(self, name="volume")
            self.add_flow(studies, select, {("dicom_study_list", "dicom_study_list")})
            self.add_flow(select, start, {("study_selected_series_list", "batch")})
        saved = self.output_folder / "preprocessed" if s.save_preprocessed else None
        preprocess = PreprocessOperator(
            self, task=s.task, settings=s.preprocess, save_to=saved, name="preprocess"
        )
        tokenize = TokenizeOperator(
            self, encoder=self.encoder, tokens=s.tokens, scoring=s.scoring, name="tokenize"
        )
        score = ScoreOperator(
            self,
            voxel_percentile=s.voxel_percentile,
            min_batch_warning=s.min_batch_warning,
            name="score",
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
            flag_mad=s.flag_mad,
            name="report",
        )
        self.add_flow(start, preprocess, {("batch", "batch")})
        self.add_flow(preprocess, tokenize, {("batch", "batch")})
        self.add_flow(tokenize, score, {("batch", "batch")})
        self.add_flow(score, outputs, {("batch", "batch")})
        self.add_flow(outputs, self.report, {("batch", "batch")})
