"""The batch rules (cs3f.screening) against brute-force numpy references, the stage ledger, and
screening against a reference bank as in a batch."""

import logging

import numpy as np
import pytest
from conftest import DISTANCE_ATOL

from cs3f.bank import ReferenceBank
from cs3f.decisions import Calibration, ScreeningRules
from cs3f.encoders import load_encoder
from cs3f.io.outputs import StudyRow, rank, scores_csv
from cs3f.method.batch_scorer import BatchScorer, ScoringSettings
from cs3f.method.tokens import TokenSettings
from cs3f.preprocess.standard_space import GridTransform, Standardised
from cs3f.screening import Screening, ScreeningError
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


def _screened(batch, variant="C", work=None, bank=None, bank_index="auto"):
    encoder = load_encoder("pixels", device="cpu")
    scoring, rules = ScoringSettings(variant=variant, bank_index=bank_index), ScreeningRules(50.0)
    screening = Screening(encoder, TOKENS, scoring, rules, work, bank)
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


@pytest.mark.parametrize("variant", ["C", "MS"])
def test_one_study_screened_against_a_bank_as_in_a_batch_with_it(batch, tmp_path, variant):
    """A bank built from a batch screening gives a new study, alone, the maps and score it gets
    in a batch of the bank's studies and itself (both with float16 token stores), and the
    bank's calibration."""
    base, _, base_calibration = _screened(batch[1:], variant, tmp_path / "base")
    identity = {"method": "test"}
    ids, dates = [f"s{i}" for i in range(5)], ["2026-01-01"] * 5
    bank = ReferenceBank.create(
        tmp_path / "bank",
        identity,
        base.bank_volumes(range(5), ids, dates),
        base_calibration.as_dict(),
    )
    alone, (alone_maps,), calibration = _screened(batch[:1], variant, tmp_path / "alone", bank)
    _, joint_maps, _ = _screened(batch[1:] + batch[:1], variant, tmp_path / "joint")
    # float32 rounding: the pairs' blocks are computed the other way round in the batch
    np.testing.assert_allclose(
        alone_maps["brain"], joint_maps[-1]["brain"], rtol=1e-5, atol=DISTANCE_ATOL
    )
    assert np.isclose(alone_maps["brain"], joint_maps[-1]["brain"], 1e-5, 1e-6).mean() > 0.98
    assert calibration == base_calibration  # the bank's leave-one-out statistics
    assert alone.warnings and "5 bank volumes" in alone.warnings[0]

    stored = Screening(None, TOKENS, ScoringSettings(variant=variant), ScreeningRules(50.0))
    for volume in base.bank_volumes(range(5), ids, dates):  # what add and remove recompute
        stored.add_stored(volume)
    stored.score()
    for i in range(stored.n_studies):
        stored.record(i, stored.voxel_maps(i))
    again = stored.calibrate()
    assert again.voxel_threshold == pytest.approx(base_calibration.voxel_threshold, rel=1e-5)
    np.testing.assert_allclose(again.reference_scores, base_calibration.reference_scores, 1e-5)


@pytest.mark.parametrize("search", ["flat", "ivf"])
def test_the_bank_index_scores_as_the_pairwise_search(batch, tmp_path, search):
    """Variant C against a bank, through the Screening: the flat index gives the pairwise
    scores (float rounding aside); IVF (trained for the run: the bank stores no index) gives
    scores never lower, and the same for nearly all tokens."""
    base, _, base_calibration = _screened(batch[1:], "C", tmp_path / "base")
    volumes = base.bank_volumes(range(5), [f"s{i}" for i in range(5)], [""] * 5)
    bank = ReferenceBank.create(tmp_path / "bank", {}, volumes, base_calibration.as_dict())
    pairwise, _, _ = _screened(batch[:1], "C", tmp_path / "pairwise", bank)
    indexed, _, _ = _screened(batch[:1], "C", tmp_path / search, bank, search)
    assert (pairwise.search, indexed.search) == ("pairwise", search)  # auto: a small bank
    assert indexed.timings["scorer_bank_index"] > 0
    for key, (want,) in pairwise.results["brain"].token_scores.items():
        # float32 ||a||^2 + ||b||^2 - 2 a.b in blocks of other shapes (tests/conftest.py):
        # about 5e-5 in a distance of 0.005 (these tokens' scores run from 0.005 to 0.1)
        (got,) = indexed.results["brain"].token_scores[key]
        same = np.isclose(got, want, rtol=1e-5, atol=5e-5).mean()
        assert same > (0.999 if search == "flat" else 0.95), (key, same)
        assert np.all(got >= want - DISTANCE_ATOL)
        if search == "flat":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=DISTANCE_ATOL)


def test_a_bank_without_the_runs_region_is_refused(batch, tmp_path):
    encoder = load_encoder("pixels", device="cpu")
    base = Screening(encoder, TOKENS, ScoringSettings(variant="C"), ScreeningRules(50.0))
    for regions in batch[1:3]:
        base.add(regions)
    volumes = base.bank_volumes([0, 1], ["a", "b"], ["", ""])
    bank = ReferenceBank.create(tmp_path / "bank", {}, volumes, {"voxel_threshold": 1.0})
    lungs = Screening(
        encoder, TOKENS, ScoringSettings(variant="C"), ScreeningRules(50.0), bank=bank
    )
    lungs.add([_region(np.random.default_rng(3), name="left lung")])
    with pytest.raises(ScreeningError, match="no left lung region"):
        lungs.score()
    empty = Screening(
        encoder, TOKENS, ScoringSettings(variant="C"), ScreeningRules(50.0), bank=bank
    )
    with pytest.raises(ScreeningError, match="no scorable study to screen against the bank"):
        empty.score()
