"""Library pieces the app relies on: safe names, collision-free keys, a safe CSV, the
streaming percentile and settings."""

import csv
import hashlib
import io

import numpy as np
import pytest

from app.settings import SettingsError, load_settings
from cs3f.decisions import Calibration
from cs3f.io.outputs import StudyRow, rank, sanitise, scores_csv, scores_json, study_keys
from cs3f.method.threshold import StreamingPercentile


def test_sanitise_keeps_names_inside_the_folder():
    assert sanitise("1.2.840.113619.2.55", "x") == "1.2.840.113619.2.55"
    assert sanitise("../../etc/passwd", "x") == "_.._etc_passwd"
    assert sanitise("..", "fallback") == "fallback" and sanitise("", "fallback") == "fallback"
    assert "/" not in sanitise("a/b\\c:d", "x")


def test_study_keys_never_collide():
    valid, twice = "1.2.840.113619.2.55", "1.2.840.99"
    clashing = ["1.2.3/4", "1.2.3:4", "1.2.3_4"]  # all three sanitise to 1.2.3_4
    values = [valid, *clashing, "", twice, twice]
    keys = study_keys(values, "study")
    assert len(set(keys)) == len(keys) == 7
    assert keys[0] == valid  # a valid, unique UID names its files itself
    assert all(k.startswith("1.2.3_4-") for k in keys[1:4])  # readable prefix + hash
    assert keys[4].startswith("study-")
    assert keys[6] == f"{keys[5]}-2"  # the same value twice: a counter on the second
    assert keys == study_keys(values, "study")  # deterministic
    assert all(sanitise(k, "x") == k for k in keys)  # every key is a safe file name


def test_scores_csv_cells_never_run_as_formulas():
    rows = [
        StudyRow("a", "1.1", patient_id='=HYPERLINK("http://x")', score=0.5),
        StudyRow("b", "1.2", patient_id="+1", accession_number="@SUM(A1)", score=0.25),
        StudyRow("c", "1.3", patient_id="-2"),
    ]
    rows[2].fail("failed", "-volume: broken")
    ranked = rank(rows, Calibration(1, (0.25, 0.5), 3))
    table = list(csv.DictReader(io.StringIO(scores_csv(ranked, show_identifiers=True))))
    cells = [v for r in table for v in r.values()]
    assert not any(v.startswith(("=", "+", "-", "@")) for v in cells)
    assert table[0]["patient_id"] == '\'=HYPERLINK("http://x")'  # kept, shown as text
    assert table[2]["reason"] == "'-volume: broken"
    assert [r["score"] for r in table] == ["0.5", "0.25", ""]  # numbers untouched


def test_identifiers_only_when_asked_for():
    row = StudyRow("k", "1.1", patient_id="P-7", patient_name="Doe^Jane", accession_number="A9")
    assert row.pseudonym == hashlib.sha256(b"k").hexdigest()[:8]
    hidden = scores_csv([row]) + scores_json([row], {})
    assert "P-7" not in hidden and "Doe" not in hidden and "A9" not in hidden
    assert row.pseudonym in hidden
    shown = scores_csv([row], show_identifiers=True) + scores_json([row], {}, True)
    assert "P-7" in shown and "Doe^Jane" in shown and "A9" in shown


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
        ("scoring.bank_index=hnsw", "scoring.bank_index"),
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
