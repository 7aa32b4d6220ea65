"""The evaluator: agreement with scikit-learn, and hand-made runs with known answers."""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from cs3f.io.nifti_io import save_nifti
from cs3f_tools.evaluate import METRIC_KEYS, Curve, evaluate, group_auroc, main

SHAPE = (40, 40, 40)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
BACKGROUND = 0.1  # every foreground voxel that is not a lesion or a blob


def _ball(centre, radius) -> np.ndarray:
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.array(centre), axis=-1) <= radius


BRAIN = _ball((20, 20, 20), 18)
SMALL, MEDIUM, LARGE = _ball((8, 20, 20), 2), _ball((20, 8, 20), 4), _ball((25, 27, 22), 7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_agrees_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(5000) < 0.1
    scores = np.round(rng.normal(size=5000) + labels, 1)  # rounding makes many ties
    curve = Curve.from_scores(scores, labels)
    assert curve.auroc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert curve.average_precision() == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-300))
    assert curve.best_f1()[0] == pytest.approx(f1, abs=1e-12)


def test_curve_threshold_at_specificity_keeps_at_most_one_percent():
    rng = np.random.default_rng(3)
    scores, labels = rng.normal(size=20000), np.zeros(20000, bool)
    threshold = Curve.from_scores(scores, labels).threshold_at_specificity(0.99)
    assert np.sum(scores >= threshold) == 200  # distinct scores: exactly 1 %


def test_undefined_metrics_are_none():
    curve = Curve.from_scores(np.array([0.3, 0.5]), np.array([False, False]))
    assert curve.auroc() is None and curve.average_precision() is None
    assert curve.best_f1() == (None, None)


def _write(tmp_path, studies):
    """studies: (uid, abnormal, score map, lesion mask or None). Patient score = map max."""
    run, truth = tmp_path / "run", tmp_path / "truth"
    rows, labels = [], ["study_instance_uid,abnormal"]
    for index, (uid, abnormal, scores, lesions) in enumerate(studies):
        key = f"study{index}"
        save_nifti(scores.astype(np.float32), AFFINE, run / "maps" / f"{key}.nii.gz")
        rows.append(
            {"key": key, "study_instance_uid": uid, "status": "scored", "score": scores.max()}
        )
        labels.append(f"{uid},{int(abnormal)}")
        if lesions is not None:
            save_nifti(lesions.astype(np.uint8), AFFINE, truth / "masks" / f"{uid}.nii.gz")
    truth.mkdir(parents=True, exist_ok=True)
    (run / "scores.json").write_text(json.dumps({"run": {}, "studies": rows}, default=float))
    (truth / "labels.csv").write_text("\n".join(labels) + "\n")
    return run, truth


def _map(*regions) -> np.ndarray:
    """Background inside the brain, then each (mask, value) painted in order."""
    scores = np.where(BRAIN, BACKGROUND, 0.0)
    for mask, value in regions:
        scores[mask] = value
    return scores


def _cohort(abnormal_map):
    lesions = SMALL | MEDIUM | LARGE
    normals = [(f"1.2.{n}", False, _map(), None) for n in range(3)]
    return [*normals, ("1.2.9", True, abnormal_map(lesions), lesions)]


def test_a_perfect_map_scores_one_everywhere(tmp_path):
    run, truth = _write(tmp_path, _cohort(lambda lesions: _map((lesions, 1.0))))
    metrics, details, _ = evaluate(run, truth)
    for key in METRIC_KEYS[:-1]:
        if key != "ltpr99_xlarge":
            assert metrics[key] == pytest.approx(1.0), key
    assert metrics["ltpr99_xlarge"] is None  # no lesion of 5 ml or more here
    assert metrics["fp_per_volume"] == 0
    assert details["lesions"] == {"small": 1, "medium": 1, "large": 1, "xlarge": 0}


def test_an_inverted_map_scores_zero(tmp_path):
    def inverted(lesions):
        return np.where(BRAIN | lesions, np.where(lesions, 0.05, 1.0), 0.0)

    run, truth = _write(tmp_path, _cohort(inverted))
    metrics, _, _ = evaluate(run, truth)
    assert metrics["v_auroc"] == pytest.approx(0.0)
    assert metrics["ltpr99_small"] == metrics["ltpr99_medium"] == metrics["ltpr99_large"] == 0


def test_one_missed_small_lesion(tmp_path):
    def missed(lesions):
        return _map((MEDIUM | LARGE, 1.0), (SMALL, 0.05))

    run, truth = _write(tmp_path, _cohort(missed))
    metrics, details, _ = evaluate(run, truth)
    assert metrics["ltpr99_small"] == 0
    assert metrics["ltpr99_medium"] == metrics["ltpr99_large"] == 1
    assert details["lesions_found"] == {"small": 0, "medium": 1, "large": 1, "xlarge": 0}
    lesion_voxels = (SMALL | MEDIUM | LARGE).sum()
    expected_dice = 2 * (MEDIUM | LARGE).sum() / ((MEDIUM | LARGE).sum() + lesion_voxels)
    assert metrics["dice99"] == pytest.approx(expected_dice)
    assert metrics["fp_per_volume"] == 0


def test_one_false_positive_blob_in_a_normal_study(tmp_path):
    studies = _cohort(lambda lesions: _map((lesions, 1.0)))
    blob = _ball((20, 30, 12), 2)
    studies[0] = (studies[0][0], False, _map((blob, 0.9)), None)
    run, truth = _write(tmp_path, studies)
    metrics, details, _ = evaluate(run, truth)
    assert details["false_positive_components"] == 1
    assert metrics["fp_per_volume"] == pytest.approx(1 / 4)
    assert metrics["ltpr99_small"] == metrics["ltpr99_medium"] == metrics["ltpr99_large"] == 1
    assert metrics["p_auroc"] == 1.0  # the blob (0.9) stays below the abnormal study's 1.0


def test_lesions_under_3_mm_are_not_counted(tmp_path):
    speck = np.zeros(SHAPE, bool)
    speck[20, 20, 20] = True  # 1 mm^3: equivalent diameter 1.24 mm
    studies = [(f"1.2.{n}", False, _map(), None) for n in range(2)]
    studies.append(("1.2.9", True, _map((LARGE | speck, 1.0)), LARGE | speck))
    _, details, _ = evaluate(*_write(tmp_path, studies))
    assert details["lesions"] == {"small": 0, "medium": 0, "large": 1, "xlarge": 0}


def test_a_lesion_of_5_ml_or_more_is_xlarge(tmp_path):
    xlarge = _ball((20, 20, 20), 11)  # 5,575 voxels of 1 mm^3
    studies = [(f"1.2.{n}", False, _map(), None) for n in range(2)]
    studies.append(("1.2.9", True, _map((xlarge, 1.0)), xlarge))
    metrics, details, _ = evaluate(*_write(tmp_path, studies))
    assert details["lesions"] == {"small": 0, "medium": 0, "large": 0, "xlarge": 1}
    assert metrics["ltpr99_xlarge"] == 1 and metrics["ltpr99_large"] is None


def test_group_auroc_against_scikit_learn():
    rng = np.random.default_rng(4)
    patients = [(f"u{n}", n % 5 == 0, float(rng.normal())) for n in range(40)]
    groups = {f"u{n}": ("a", "b", "c")[n % 3] for n in range(40)}
    found = group_auroc(patients, groups)
    normal = [(uid, score) for uid, abnormal, score in patients if not abnormal]
    for group in ("a", "b", "c"):
        expected = roc_auc_score(
            [groups[uid] == group for uid, _ in normal], [score for _, score in normal]
        )
        assert found[group] == pytest.approx(expected)


def test_patient_auroc_per_class_of_the_largest_lesion_against_scikit_learn(tmp_path):
    rng = np.random.default_rng(5)
    largest = {"small": SMALL, "large": LARGE | SMALL, "xlarge": _ball((20, 20, 20), 11)}
    studies = [(f"1.2.{n}", False, _map((SMALL, rng.random())), None) for n in range(6)]
    for n, (name, mask) in enumerate(sorted(largest.items()) * 2):
        studies.append((f"1.3.{n}", True, _map((mask, rng.random())), mask))
    _, details, _ = evaluate(*_write(tmp_path, studies))
    found = details["patient_auroc_by_largest_lesion"]
    normal = [s[2].max() for s in studies if not s[1]]
    for name, mask in largest.items():
        hits = [s[2].max() for s in studies if s[1] and s[3] is mask]
        expected = roc_auc_score([0] * len(normal) + [1] * len(hits), normal + hits)
        assert found[name] == {"studies": 2, "auroc": pytest.approx(expected)}
    assert found["medium"] == {"studies": 0, "auroc": None}


def test_cli_writes_metrics_table_and_plots(tmp_path, capsys):
    run, truth = _write(tmp_path, _cohort(lambda lesions: _map((lesions, 1.0))))
    assert main(["--run", str(run), "--truth", str(truth)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert (run / "metrics.md").read_text().startswith("| metric | value |")
    for name in ("metrics_roc.png", "metrics_pr.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "p_auroc" in capsys.readouterr().out


def test_a_mask_on_another_grid_is_refused(tmp_path, capsys):
    run, truth = _write(tmp_path, _cohort(lambda lesions: _map((lesions, 1.0))))
    save_nifti(np.zeros((10, 10, 10), np.uint8), AFFINE, truth / "masks" / "1.2.9.nii.gz")
    assert main(["--run", str(run), "--truth", str(truth)]) == 2
    assert "not on its map's grid" in capsys.readouterr().err


def test_a_batch_without_abnormal_studies_has_no_lesion_metrics(tmp_path):
    studies = [(f"1.2.{n}", False, _map(), None) for n in range(3)]
    metrics, _, _ = evaluate(*_write(tmp_path, studies))
    assert metrics["p_auroc"] is None and metrics["dice"] is None and metrics["dice99"] is None
    assert metrics["ltpr99_small"] is None and metrics["fp_per_volume"] == 0
