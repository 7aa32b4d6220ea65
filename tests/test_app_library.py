"""Library pieces the app relies on: safe names, ranking, the streaming percentile and settings."""

import numpy as np
import pytest

from app.settings import SettingsError, load_settings
from cs3f.outputs import StudyRow, rank, sanitise, scores_csv
from cs3f.threshold import StreamingPercentile


def test_sanitise_keeps_names_inside_the_folder():
    assert sanitise("1.2.840.113619.2.55", "x") == "1.2.840.113619.2.55"
    assert sanitise("../../etc/passwd", "x") == "_.._etc_passwd"
    assert sanitise("..", "fallback") == "fallback" and sanitise("", "fallback") == "fallback"
    assert "/" not in sanitise("a/b\\c:d", "x")


def test_rank_orders_scores_and_puts_failures_last():
    rows = [StudyRow(f"s{i}", f"1.{i}", score=s) for i, s in enumerate([0.2, 0.9, 0.1, 0.21, 0.19])]
    rows.append(StudyRow("bad", "1.9"))
    rows[-1].fail("failed", "volume: broken")
    ranked = rank(rows, flag_mad=3.0)
    assert [r.key for r in ranked] == ["s1", "s3", "s0", "s4", "s2", "bad"]
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5, None]
    assert ranked[0].batch_percentile == 100.0 and ranked[4].batch_percentile == 20.0
    assert [r.flagged for r in ranked] == [True, False, False, False, False, False]
    assert scores_csv(ranked).splitlines()[-1].endswith(",failed,volume: broken")


def test_streaming_percentile_matches_numpy():
    values = np.random.default_rng(0).gamma(2.0, 1.0, 200_000)
    histogram = StreamingPercentile(0.0, float(values.max()))
    for chunk in np.array_split(values, 5):
        histogram.add(chunk)
    for q in (50, 90, 99):
        assert histogram.percentile(q) == pytest.approx(np.percentile(values, q), abs=2e-3)


def test_settings_layers_and_errors(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("scoring: {variant: C}\ntokens: {dim: 64}\n")
    settings = load_settings(config, ["tokens.dim=32"], task="lung-ct", encoder="pixels")
    assert settings.tokens.dim == 32 and settings.scoring.variant == "C"
    assert settings.task == "lung-ct" and settings.preprocess.window == (-800.0, 400.0)
    with pytest.raises(SettingsError, match="unknown"):
        load_settings(None, ["tokens.dimension=3"])
    with pytest.raises(SettingsError):
        load_settings(None, [], task="knee")
