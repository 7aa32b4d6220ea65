"""Preprocessing throughput at 1 and N worker processes; prints one JSON document.

    python bench/bench_preprocess_workers.py [--studies 4] [--workers 1 2]

Input: the first ``--studies`` studies of the README's sample batch (``sample_data/studies``,
built by the README's first command), read as the app reads them. Each worker count runs the
same studies through :func:`cs3f.preprocess.parallel.preprocess_all` (worker start-up
included) and reports studies per minute; the results are checked to be byte-identical across
the worker counts.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cs3f.io.dicom_volume import series_volume
from cs3f.preprocess.parallel import preprocess_all, usable_cores
from cs3f.preprocess.standard_space import PreprocessSettings

SAMPLE = ROOT / "sample_data" / "studies"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, usable_cores()])
    args = parser.parse_args()
    folders = sorted(p for p in SAMPLE.iterdir() if p.is_dir())[: args.studies]
    if not folders:
        sys.exit(f"no studies in {SAMPLE}: run the README's first command")
    volumes = [
        series_volume([pydicom.dcmread(f) for f in sorted(d.glob("*.dcm"))])[0] for d in folders
    ]
    settings, runs, first = PreprocessSettings(), [], None
    for workers in args.workers:
        start = time.perf_counter()
        results = [f.result() for f in preprocess_all(volumes, "brain-mri", settings, workers)]
        seconds = time.perf_counter() - start
        stacked = b"".join(np.asarray(r.volume).tobytes() for regions in results for r in regions)
        first = stacked if first is None else first
        runs.append(
            {
                "workers": workers,
                "seconds": round(seconds, 1),
                "studies_per_min": round(60 * len(volumes) / seconds, 2),
                "identical_to_first": stacked == first,
            }
        )
    print(
        json.dumps(
            {
                "machine": {
                    "cpu": platform.processor() or platform.machine(),
                    "cores": usable_cores(),
                },
                "studies": len(volumes),
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
