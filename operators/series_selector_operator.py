"""SDK studies -> StudiesFound: one series per study by the SDK's JSON rules; studies without a
match keep a skipped row."""

from __future__ import annotations

import json
import re
from pathlib import Path

from monai.deploy.operators import DICOMSeriesSelectorOperator

from cs3f.io.dicom_volume import slice_count
from cs3f.io.outputs import StudyRow, study_keys
from operators.stages import FoundStudy, Ledger, StudiesFound, redact, register


def _iso_date(value: str) -> str:
    """DICOM DA ``YYYYMMDD`` as ``YYYY-MM-DD``; anything else as it is."""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if re.fullmatch(r"\d{8}", value) else value


def _slices(series) -> int:
    """Slices of an SDK series: its instances, or the frames of a multi-frame instance."""
    return slice_count([s.get_native_sop_instance() for s in series.get_sop_instances()])


class SeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """The SDK selector applied study by study, so that every study gets a row.

    Where several series match, the one with the most slices wins (instances, or the frames of a
    multi-frame instance) and the row says so.
    Input ``(studies, intake)`` from the study loader; output :class:`StudiesFound`.
    """

    def __init__(self, fragment, *args, work: Path, **kwargs):
        self.work = work
        super().__init__(fragment, *args, all_matched=True, **kwargs)

    def compute(self, op_input, op_output, context):
        studies, intake, series_files = op_input.receive(self.input_name_study_list)
        rules = json.loads(self._rules_json_str)
        ledger = Ledger("dicom", self.work, intake=intake)
        found = StudiesFound(ledger, [])
        studies = sorted(studies, key=lambda s: str(s.StudyInstanceUID))
        uids = [str(study.StudyInstanceUID or "") for study in studies]
        unnamed = [f"no-study-uid-{n:03d}" for n in range(len(intake["without_study_uid"]))]
        keys = study_keys(uids + unnamed, "study")  # one allocation: no two rows share a key
        for study, uid, key in zip(studies, uids, keys[: len(uids)], strict=True):
            row = StudyRow(key=key, study_instance_uid=uid)
            ledger.rows.append(row)
            series = study.get_all_series()
            if series:
                native = series[0].get_sop_instances()[0].get_native_sop_instance()
                row.patient_id = str(native.get("PatientID", ""))
                row.accession_number = str(native.get("AccessionNumber", ""))
                row.study_date = _iso_date(str(native.get("StudyDate", "")))
                patient = row.patient_name = str(native.get("PatientName", ""))
                register(
                    row,
                    patient,
                    *re.split(r"[\^=]", patient),  # each part of the name on its own too
                    *(
                        native.get(n, "")
                        for n in ("PatientBirthDate", "OtherPatientIDs", "StudyID")
                    ),
                    *(s.SeriesInstanceUID for s in series),
                )
            try:
                selected = self.filter(rules, [study], all_matched=True)
            except Exception as exc:  # noqa: BLE001  (the SDK raises bare errors on odd tags)
                reason = redact(f"series selection failed: {type(exc).__name__}: {exc}", row)
                row.fail("skipped", reason)
                selected = []
            matches = [s.series for sel in selected for s in sel.selected_series]
            matches.sort(key=_slices, reverse=True)  # stable: ties keep the study's order
            if not matches and row.status == "scored":
                row.fail(
                    "skipped",
                    f"no series matches the {len(rules['selections'])} selection "
                    f"rule(s) ({len(series)} series in the study)",
                )
            elif matches:
                found.studies.append(FoundStudy(row, matches[0]))
                row.series_instance_uid = str(matches[0].SeriesInstanceUID or "")
                kept = len(matches[0].get_sop_instances())
                notes = []
                if len(matches) > 1:
                    notes.append(
                        f"{len(matches)} series matched; chose the one with the most "
                        f"slices ({_slices(matches[0])})"
                    )
                dropped = series_files.get(row.series_instance_uid, kept) - kept
                if dropped > 0:
                    row.details["instances_left_out"] = dropped
                    notes.append(
                        f"{dropped} of the series' {kept + dropped} instances left out "
                        "(a second instance at one slice position, or unparsable)"
                    )
                row.reason = "; ".join(notes)
        for key, count in zip(keys[len(uids) :], intake["without_study_uid"], strict=True):
            row = StudyRow(key=key, study_instance_uid="")
            row.fail(
                "skipped",
                f"{count} DICOM instances in one folder have no StudyInstanceUID: "
                "they cannot be grouped or referenced by a SEG",
            )
            ledger.rows.append(row)
        op_output.emit(found, self.output_name_selected_series)
