"""Peak memory of DICOM intake: the app's first three stages on a folder; prints one JSON.

    python bench/bench_intake.py -i bench/out/cohort40/studies

Runs the app's own operators in their graph, studies -> series selection -> volume, with the
default selection rules, into a sink that only counts the converted volumes, and reports the
process's peak RSS (``ru_maxrss``) against its RSS once everything is imported, and at the end
its anonymous and file-backed resident memory. The study volumes go to memory-mapped files in a
temporary work folder, as in the app: their pages count in RSS as file-backed (the kernel can
drop them), while the DICOM instances and pixels intake holds are anonymous memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provenance import commit

import app.__main__  # noqa: F401  (prepares the process for Holoscan, as the app does)

# isort: split
from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from app.settings import AppSettings
from operators.series_selector_operator import SeriesSelectorOperator
from operators.stage import Stage
from operators.stages import SourceVolumes
from operators.study_loader_operator import StudyLoaderOperator
from operators.volume_operator import VolumeOperator


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (kB there), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    raise KeyError(field)


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Sink(Stage):
    receives = "sources"

    def run(self, sources: SourceVolumes) -> None:
        self.volumes = len(sources.studies)
        self.rows = len(sources.ledger.rows)


class IntakeApp(Application):
    def __init__(self, folder: Path, work: Path) -> None:
        self.folder, self.work = folder, work
        super().__init__([__file__])

    def compose(self) -> None:
        studies = StudyLoaderOperator(
            self, CountCondition(self, 1), input_folder=self.folder, must_load=False, name="s"
        )
        rules = AppSettings().rules_json()
        select = SeriesSelectorOperator(self, rules=rules, work=self.work, name="select")
        volume = VolumeOperator(self, name="volume")
        self.sink = Sink(self, name="sink")
        self.add_flow(studies, select, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(select, volume, {("study_selected_series_list", "found")})
        self.add_flow(volume, self.sink, {("sources", "sources")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-i", "--input", type=Path, required=True, help="folder of DICOM studies")
    args = parser.parse_args()
    files = [p for p in args.input.rglob("*") if p.is_file()]
    after_imports = rss_mb()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as work:
        application = IntakeApp(args.input, Path(work))
        application.run()
        anonymous, mapped = status_mb("RssAnon"), status_mb("RssFile")
    print(
        json.dumps(
            {
                "commit": commit(),
                "input_files": len(files),
                "input_mb": sum(p.stat().st_size for p in files) / 2**20,
                "studies": application.sink.rows,
                "volumes": application.sink.volumes,
                "seconds": time.perf_counter() - start,
                "rss_after_imports_mb": after_imports,
                "peak_rss_mb": rss_mb(),
                "intake_mb": rss_mb() - after_imports,
                "at_end_anonymous_mb": anonymous,
                "at_end_file_backed_mb": mapped,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
