"""Preprocessing benchmark: seconds per study on this machine; prints one JSON document.

    python bench/bench_preprocess.py            # brain (1 mm T1 with skull) and lung phantom

The brain input is ``../shared/data/nifti/normal/chris_t1.nii.gz`` (0.88 mm, with skull) when
present, else nilearn's MNI152 2009 T1 (1 mm, skull-stripped). Each case runs ``--repeat`` times
after one warm-up run (which loads deepbet and the template); the median is reported. Target
(issue 3): one 1 mm brain in under a minute on the 2-core CI CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cs3f.io.nifti_io import load_nifti
from cs3f.preprocess.brain import preprocess_brain
from cs3f.preprocess.lungs import preprocess_lungs
from cs3f.preprocess.standard_space import PreprocessSettings
from cs3f.preprocess.template import template_brain

CHRIS = ROOT.parent / "shared" / "data" / "nifti" / "normal" / "chris_t1.nii.gz"


def _timed(fn, repeat: int) -> dict:
    fn()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return {
        "median_s": round(statistics.median(seconds), 2),
        "runs_s": [round(s, 2) for s in seconds],
        "result": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if CHRIS.is_file():
        name, brain = "chris_t1 (0.88 mm, with skull)", load_nifti(CHRIS)
    else:
        name, brain = "MNI152 2009 T1 (1 mm, skull-stripped)", template_brain(1)
    settings = PreprocessSettings()
    brain_run = _timed(lambda: preprocess_brain(brain, settings).details, args.repeat)
    from test_preprocess_lungs import chest_phantom

    chest, _ = chest_phantom()
    lung_run = _timed(
        lambda: [r.details["lung_ml"] for r in preprocess_lungs(chest, settings)], args.repeat
    )
    print(
        json.dumps(
            {
                "machine": {
                    "cpu": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(),
                },
                "brain": {"input": name, "shape": list(brain.shape), **brain_run},
                "lung_phantom": {"shape": list(chest.shape), **lung_run},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
