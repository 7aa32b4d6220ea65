"""The batch rules (cs3f.screening) against brute-force numpy references, and the stage ledger."""

import logging

import numpy as np
import pytest

from cs3f.encoders import load_encoder
from cs3f.io.outputs import StudyRow, rank, scores_csv
from cs3f.method.batch_scorer import BatchScorer, ScoringSettings
from cs3f.method.tokens import TokenSettings
from cs3f.preprocess.standard_space import GridTransform, Standardised
from cs3f.screening import Calibration, Screening, ScreeningError, ScreeningRules
from operators.stages import Ledger

TOKENS = TokenSettings(q_coarse=4, q_fine=2, dim=16)
SHAPE = (24, 24, 24)


def _region(rng, name="brain", lesion=False) -> Standardised:
    volume = rng.uniform(0.2, 0.4, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[3:21, 3:21, 3:21] = True
    if lesion:
        volume[8:14, 8:14, 8:14] = 1.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    transform = GridTransform(SHAPE, affine, SHAPE, affine)
    return Standardised(name, volume * mask, mask, transform, affine)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return [[_region(rng, lesion=i == 0)] for i in range(6)]


def _screened(batch, variant="C"):
    encoder = load_encoder("pixels", device="cpu")
    screening = Screening(encoder, TOKENS, ScoringSettings(variant=variant), ScreeningRules(50.0))
    for regions in batch:
        screening.add(regions)
    screening.score()
    maps = [screening.voxel_maps(i) for i in range(screening.n_studies)]
    for i, m in enumerate(maps):
        screening.record(i, m)
    return screening, maps, screening.calibrate()


def test_screening_equals_the_library_steps_done_by_hand(batch):
    screening, maps, calibration = _screened(batch)
    scorer = BatchScorer(load_encoder("pixels", device="cpu"), TOKENS, ScoringSettings(variant="C"))
    for regions in batch:
        scorer.add(regions[0].volume, regions[0].mask)
    result = scorer.score()
    foreground = []
    for i, regions in enumerate(batch):
        expected = result.voxel_map(i, regions[0].mask)
        np.testing.assert_array_equal(maps[i]["brain"], expected)
        assert screening.scores[i] == float(expected.max())
        foreground.append(expected[regions[0].mask])
    values = np.concatenate(foreground)
    width = (values.max() - min(0.0, values.min())) / (1 << 16)
    assert abs(calibration.voxel_threshold - np.percentile(values, 50.0)) <= 2 * width
    assert max(screening.scores, key=screening.scores.get) == 0  # the study with the lesion
    source = screening.source_map(0, maps[0])
    np.testing.assert_allclose(source, maps[0]["brain"], atol=1e-6)  # identity transform
    np.testing.assert_array_equal(calibration.segment(source), source > calibration.voxel_threshold)


def test_flag_and_percentile_follow_median_and_mad():
    scores = np.array([0.2, 0.9, 0.1, 0.21, 0.19, 0.22])
    calibration = Calibration(0.5, tuple(sorted(scores)), flag_mad=3.0)
    median = np.median(scores)
    sd = 1.4826 * np.median(np.abs(scores - median))
    for s in scores:
        assert calibration.flagged(s) == (s > median + 3.0 * sd)
        assert calibration.percentile(s) == round(100 * np.mean(scores <= s), 2)
    assert calibration.flagged(0.9) and not calibration.flagged(0.22)
    assert not Calibration(0.5, (0.3, 0.3, 0.3), 3.0).flagged(0.3)  # MAD 0 flags nothing


def test_rank_orders_scores_and_puts_failures_last():
    values = [0.2, 0.9, 0.1, 0.21, 0.19]
    rows = [StudyRow(f"s{i}", f"1.{i}", score=s) for i, s in enumerate(values)]
    rows.append(StudyRow("bad", "1.9"))
    rows[-1].fail("failed", "volume: broken")
    ranked = rank(rows, Calibration(0.5, tuple(sorted(values)), 3.0))
    assert [r.key for r in ranked] == ["s1", "s3", "s0", "s4", "s2", "bad"]
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5, None]
    assert ranked[0].batch_percentile == 100.0 and ranked[4].batch_percentile == 20.0
    assert [r.flagged for r in ranked] == [True, False, False, False, False, False]
    assert scores_csv(ranked).splitlines()[-1].endswith(",failed,volume: broken")


def test_a_study_is_added_whole_or_not_at_all():
    rng = np.random.default_rng(1)
    screening = Screening(
        load_encoder("pixels", device="cpu"), TOKENS, ScoringSettings(), ScreeningRules()
    )
    empty = _region(rng, "right lung")
    empty.mask[...] = False
    with pytest.raises(ValueError, match="empty foreground"):
        screening.add([_region(rng, "left lung"), empty])
    assert screening.n_studies == 0 and screening.scorers["left lung"].shapes == []
    screening.add([_region(rng, "left lung"), _region(rng, "right lung")])
    with pytest.raises(ScreeningError, match="at least 2"):
        screening.score()


@pytest.mark.parametrize(
    "kwargs", [{"voxel_percentile": 100.0}, {"flag_mad": 0.0}, {"min_batch_warning": 1}]
)
def test_rules_are_range_checked(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ScreeningRules(**kwargs)


def test_a_failed_study_logs_its_traceback_without_identifiers(tmp_path, caplog):
    uid = "1.2.826.0.1.3680043.8.498.12345"
    row = StudyRow(key=uid, study_instance_uid=uid, patient_id="PAT-0042")
    ledger = Ledger("dicom", tmp_path, rows=[row])

    def broken(_):
        raise ValueError(f"cannot read {uid} of PAT-0042")

    with caplog.at_level(logging.DEBUG, logger="cs3f.app"):
        assert ledger.each("volume", [row], lambda r: r, broken) == []
    assert row.status == "failed" and row.reason.startswith(
        "volume: ValueError: cannot read <study"
    )
    text = caplog.text
    assert "Traceback" in text and "in broken" in text
    assert uid not in text + row.reason and "PAT-0042" not in text + row.reason
