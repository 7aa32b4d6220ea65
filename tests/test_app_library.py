"""Library pieces the app relies on: safe names, the streaming percentile and settings."""

import numpy as np
import pytest

from app.settings import SettingsError, load_settings
from cs3f.io.outputs import sanitise
from cs3f.method.threshold import StreamingPercentile


def test_sanitise_keeps_names_inside_the_folder():
    assert sanitise("1.2.840.113619.2.55", "x") == "1.2.840.113619.2.55"
    assert sanitise("../../etc/passwd", "x") == "_.._etc_passwd"
    assert sanitise("..", "fallback") == "fallback" and sanitise("", "fallback") == "fallback"
    assert "/" not in sanitise("a/b\\c:d", "x")


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


@pytest.mark.parametrize(
    "override, named",
    [
        ("tokens.dim=0", "tokens.dim"),
        ("scoring.rho=1.5", "scoring.rho"),
        ("scoring.n_routes=0", "scoring.n_routes"),
        ("scoring.device=tpu", "scoring.device"),
        ("preprocess.size=8", "preprocess.size"),
        ("preprocess.brain_ml=[2500, 600]", "preprocess.brain_ml"),
        ("screening.voxel_percentile=100", "screening.voxel_percentile"),
        ("screening.flag_mad=-1", "screening.flag_mad"),
        ("report_studies=-1", "report_studies"),
        ("encoder_batch=0", "encoder_batch"),
        ("tokens.dim=many", "tokens.dim must be a number"),
        ("tokens.dim=2.5", "tokens.dim must be a whole number"),
        ("save_preprocessed=3", "save_preprocessed must be a bool"),
    ],
)
def test_every_setting_is_range_checked_and_named(override, named):
    with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
        load_settings(None, [override])
