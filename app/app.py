"""The application graph. ``compose()`` is the pipeline; each arrow is one stage-data class of
:mod:`operators.stages`, named by its port:

DICOM:  studies -> series selection -found-> volume -sources-> preprocess -standard-> screen
NIfTI:  volumes -------------------------------sources-> preprocess -standard-> screen
        screen -screened-> outputs -written-> report       (screening, against a bank or not)
        screen -screened-> bank                            (bank build, bank add)
"""

from __future__ import annotations

from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from app.settings import AppSettings
from cs3f.bank import ReferenceBank
from cs3f.encoders import SliceEncoder
from operators.bank_operator import BankOperator
from operators.nifti_loader_operator import NiftiLoaderOperator
from operators.outputs_operator import OutputsOperator
from operators.preprocess_operator import PreprocessOperator
from operators.report_operator import ReportOperator
from operators.screen_operator import ScreenOperator
from operators.series_selector_operator import SeriesSelectorOperator
from operators.study_loader_operator import StudyLoaderOperator
from operators.volume_operator import VolumeOperator


class ScreeningApp(Application):
    """Screens a whole batch of studies for anomalies by comparing them with each other, or
    with a reference bank's volumes; or writes the batch into a bank.

    ``work`` is the run's scratch folder (created and removed by the entry point). ``mode`` is
    ``"screen"`` (against ``bank`` when given), ``"bank build"`` (a new bank at ``bank_path``
    with ``identity``) or ``"bank add"`` (the batch added to ``bank``). ``results_seed``: the
    seed the derived objects' UIDs derive from (:mod:`cs3f.io.result_uids`; jobs next to a
    PACS give it), or None for new UIDs.
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
        mode: str = "screen",
        bank: ReferenceBank | None = None,
        bank_path: Path | None = None,
        results_seed: str | None = None,
    ):
        self.input_folder, self.output_folder = Path(input_folder), Path(output_folder)
        self.work, self.input_format = Path(work), input_format
        self.settings, self.encoder, self.run_info = settings, encoder, run
        self.mode, self.bank, self.bank_path = mode, bank, bank_path
        self.results_seed = results_seed
        self.report: ReportOperator | None = None
        self.bank_writer: BankOperator | None = None
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
        against = self.bank if self.mode == "screen" else None
        preprocess = PreprocessOperator(
            self,
            task=s.task,
            settings=s.preprocess,
            save_to=saved,
            against_bank=self.bank is not None,  # screening against it, or adding to it
            name="preprocess",
        )
        screen = ScreenOperator(
            self,
            encoder=self.encoder,
            tokens=s.tokens,
            scoring=s.scoring,
            rules=s.screening,
            bank=against,
            stored=self.bank if self.mode == "bank add" else None,
            name="screen",
        )
        self.add_flow(sources, preprocess, {("sources", "sources")})
        self.add_flow(preprocess, screen, {("standard", "standard")})
        if self.mode != "screen":
            self.bank_writer = BankOperator(
                self,
                path=self.bank_path,
                identity=self.settings.identity(self.encoder),
                bank=self.bank,
                name="bank",
            )
            self.add_flow(screen, self.bank_writer, {("screened", "screened")})
            return
        outputs = OutputsOperator(
            self,
            output_folder=self.output_folder,
            encoder_name=self.encoder.name,
            report_studies=s.report_studies,
            results_seed=self.results_seed,
            reference="bank" if self.bank else "batch",
            name="outputs",
        )
        self.report = ReportOperator(
            self,
            output_folder=self.output_folder,
            run=self.run_info,
            show_identifiers=s.show_identifiers,
            name="report",
        )
        self.add_flow(screen, outputs, {("screened", "screened")})
        self.add_flow(outputs, self.report, {("written", "written")})
