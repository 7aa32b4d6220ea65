"""All DICOM studies under the input folder (any nesting) -> Batch of unselected studies."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai.deploy.operators import DICOMDataLoaderOperator
from pydicom import dcmread

LOG = logging.getLogger("cs3f.app")


class StudyLoaderOperator(DICOMDataLoaderOperator):
    """The SDK loader, made safe for real folders: files are listed in sorted order and any file
    that pydicom cannot parse is skipped and counted (the SDK's own loader only skips some kinds
    of bad file and would stop the batch on others). Instances without a StudyInstanceUID (which
    the SDK drops silently) are counted per folder, so they still get a row. Emits
    ``(studies, intake)``."""

    def _list_files(self, path, files):
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                file = os.path.join(root, name)
                self.intake["files"] += 1
                try:
                    header = dcmread(file, stop_before_pixels=True)
                except Exception:  # noqa: BLE001  (any unparsable file is skipped)
                    self.intake["skipped_files"] += 1
                    continue
                if not str(header.get("StudyInstanceUID", "") or "").strip():
                    folders = self.intake["without_study_uid"]
                    folders[root] = folders.get(root, 0) + 1
                    continue
                files.append(file)

    def compute(self, op_input, op_output, context):
        self.intake = {"files": 0, "skipped_files": 0, "without_study_uid": {}}
        studies = self.load_data_to_studies(Path(self.input_path))
        self.intake["without_study_uid"] = sorted(self.intake["without_study_uid"].values())
        LOG.info(
            "found %d files, %d not DICOM or unreadable (skipped), %d studies",
            self.intake["files"],
            self.intake["skipped_files"],
            len(studies),
        )
        op_output.emit((studies, dict(self.intake)), self.output_name)
