"""The detection quality gate: a small cohort from cs3f_tools.cohort, scored end to end through the
library with the offline encoder, must find its lesions; raw pixels on the same cohort must not.

The cohort is built in atlas space (what an affine registration leaves: a smooth deformation and
a residual rigid misalignment), so that no study needs the minute of registration; everything
after registration runs as in the app: the atlas preprocessing (crop, resample, Nyul),
tokenisation, coarse and coarse-to-fine scoring, voxel maps, and the evaluator on each study's
own grid. To stay at CI size the standard grid is 112^3 (1.4 mm voxels) with coarse tokens of 8
slices, so a token spans about 11 mm as at the product's 224^3 with q = 14.

Measured (2026-12-02, Colin27 and the two MS subjects as hosts; bench/RESULTS.md): histogram MS
voxel AUROC 0.807, C 0.821, 5 of 6 lesions found at 99 % voxel specificity in both; pixels C
voxel AUROC 0.568, 2 of 6 found. The floors leave a margin for platform noise; the run itself
is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from cs3f.encoders import load_encoder
from cs3f.method.tokens import TokenSettings
from cs3f.preprocess.brain import preprocess_brain
from cs3f.preprocess.standard_space import PreprocessSettings
from cs3f.volume import Volume
from cs3f_tools.cohort import COLIN27, load_sources, make_subject
from cs3f_tools.cohort_eval import CohortStudy, score_cohort

N_STUDIES, N_NORMAL, SEED = 12, 9, 7
SETTINGS = PreprocessSettings(input="atlas", size=112)
TOKENS = TokenSettings(q_coarse=8, q_fine=2)


def _found(result: dict) -> tuple[int, int]:
    return sum(result["lesions_found"].values()), sum(result["lesions"].values())


@pytest.fixture(scope="module")
def cohort() -> list[CohortStudy]:
    """12 studies, the base brains taking turns (so each has look-alikes), the last three with
    large or tumour-sized lesions. The floors were measured with the three individual hosts."""
    ms = SHARED_DATA / "nifti" / "ms"
    if not ms.is_dir() or not COLIN27.is_file():
        pytest.skip("needs ../shared/data/nifti/ms and Debian mricron-data (the measured hosts)")
    sources = load_sources(ms)
    studies = []
    for n in range(N_STUDIES):
        subject = make_subject(
            np.random.default_rng([SEED, n]),
            n >= N_NORMAL,
            sources,
            sizes=("large", "xlarge"),
            space="atlas",
            host=n % len(sources.brains),
        )
        region = preprocess_brain(Volume(subject.image, subject.affine), SETTINGS)
        studies.append(
            CohortStudy(
                f"study-{n}",
                n >= N_NORMAL,
                region.volume,
                region.mask,
                region.transform,
                subject.lesions,
            )
        )
    return studies


@pytest.fixture(scope="module")
def histogram(cohort) -> dict[str, dict]:
    return score_cohort(cohort, load_encoder("histogram", device="cpu"), TOKENS, ("MS", "C"))


@pytest.fixture(scope="module")
def pixels(cohort) -> dict:
    coarse = TokenSettings(q_coarse=TOKENS.q_coarse, q_fine=None)
    return score_cohort(cohort, load_encoder("pixels", device="cpu"), coarse, ("C",))["C"]


@pytest.mark.parametrize("variant", ["MS", "C"])
def test_offline_encoder_finds_the_lesions(histogram, variant):
    result = histogram[variant]
    found, lesions = _found(result)
    assert lesions >= 4, "the gate cohort lost its lesions"
    assert result["metrics"]["v_auroc"] >= 0.75, result
    assert found >= lesions - 2, result
    assert result["metrics"]["fp_per_volume"] <= 30, result


def test_pixels_stay_far_below(histogram, pixels):
    """Raw pixels on the same cohort: the gate cannot pass by a trivial cohort."""
    assert pixels["metrics"]["v_auroc"] <= histogram["C"]["metrics"]["v_auroc"] - 0.15, pixels
    assert _found(pixels)[0] < _found(histogram["C"])[0], pixels
