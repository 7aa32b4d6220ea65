"""All DICOM studies under the input folder (any nesting) -> Batch of unselected studies."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from pathlib import Path

from monai.deploy.operators import DICOMDataLoaderOperator
from pydicom import dcmread
from pydicom.dataset import Dataset

from cs3f.io.dicom_volume import shallow_copy
from cs3f.progress import Progress

LOG = logging.getLogger("cs3f.app")
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFER_BYTES = 1024
"""Values longer than this (the pixel data, above all) stay on disk until a stage reads them."""


def _ends_early(path: str, header: Dataset) -> bool:
    """Whether the file ends before its native (uncompressed) pixel data does; compressed pixel
    data has no declared length, and its fragments are checked when decoded."""
    raw = header.get_item("PixelData", keep_deferred=True)
    tell = getattr(raw, "value_tell", None)  # only a raw element knows where its value starts
    if tell is None or raw.length == UNDEFINED_LENGTH:
        return False
    return tell + raw.length > os.path.getsize(path)


@contextlib.contextmanager
def _deferred_reads(module):
    """Within the block, ``module.dcmread`` defers values over :data:`DEFER_BYTES`."""
    original = module.dcmread
    module.dcmread = functools.partial(original, defer_size=DEFER_BYTES)
    try:
        yield
    finally:
        module.dcmread = original


class StudyLoaderOperator(DICOMDataLoaderOperator):
    """The SDK loader, made safe for real folders: files are listed in sorted order and any file
    that pydicom cannot parse, that belongs to no study and holds no image (a DICOMDIR) or that
    ends before its pixel data does, is skipped and counted (the SDK's own loader only skips
    some kinds of bad file and would stop the batch on others). Instances without a
    StudyInstanceUID (which the SDK drops silently) are counted per folder, so they still get a
    row. An empty or malformed SeriesNumber (optional) no longer makes its series disappear. Emits
    ``(studies, intake, files per SeriesInstanceUID)``; the last lets the selection say how
    many instances the SDK left out (duplicates at one slice position, unparsable ones)."""

    def _list_files(self, path, files):
        found = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            found.extend((root, os.path.join(root, name)) for name in sorted(names))
        self.intake["files"] = len(found)
        progress = Progress(LOG, "check files", len(found))
        for root, file in found:
            progress.step()
            try:
                header = dcmread(file, defer_size=256)  # large values stay on disk
                truncated = _ends_early(file, header)
            except Exception:  # noqa: BLE001  (any unparsable file is skipped)
                truncated = True
            if truncated:
                self.intake["skipped_files"] += 1
                continue
            if not str(header.get("StudyInstanceUID", "") or "").strip():
                if "PixelData" not in header:  # a DICOMDIR index: no study, no image
                    self.intake["skipped_files"] += 1
                    continue
                folders = self.intake["without_study_uid"]
                folders[root] = folders.get(root, 0) + 1
                continue
            files.append(file)
            series = str(header.get("SeriesInstanceUID", "") or "")
            self.series_files[series] = self.series_files.get(series, 0) + 1

    def _load_data(self, files):
        """The SDK's, with progress, reading headers only: its ``dcmread`` (which takes no
        options) defers values over :data:`DEFER_BYTES`, so intake holds no pixels; the volume
        stage reads a selected series' pixels from its files, once, and keeps none of them."""
        progress = Progress(LOG, "read files", len(files))

        def counted():
            for file in files:
                yield file
                progress.step()

        with _deferred_reads(sys.modules[DICOMDataLoaderOperator.__module__]):
            return super()._load_data(counted())

    def populate_series_attributes(self, series, sop_instance):
        """The SDK's, given a header without a SeriesNumber that is not a whole number: the SDK
        calls int() on it, and when that raises, the series is never added to its study."""
        number = sop_instance.get("SeriesNumber")
        try:
            int(number)
        except (TypeError, ValueError):
            if "SeriesNumber" in sop_instance:
                sop_instance = shallow_copy(sop_instance)  # the instance itself keeps it
                del sop_instance.SeriesNumber
        super().populate_series_attributes(series, sop_instance)

    def compute(self, op_input, op_output, context):
        self.intake = {"files": 0, "skipped_files": 0, "without_study_uid": {}}
        self.series_files: dict[str, int] = {}
        studies = self.load_data_to_studies(Path(self.input_path))
        self.intake["without_study_uid"] = sorted(self.intake["without_study_uid"].values())
        LOG.info(
            "found %d files, %d not DICOM or unreadable (skipped), %d studies",
            self.intake["files"],
            self.intake["skipped_files"],
            len(studies),
        )
        op_output.emit((studies, dict(self.intake), dict(self.series_files)), self.output_name)
