"""The bank index: the K nearest distinct volumes from one FAISS index over all reference
tokens, exact with the flat index (against the pairwise scorer and a numpy brute force, with
lists too short at first), and the approximate IVF index measured for recall against it."""

import numpy as np
import pytest

from cs3f.method.scoring import mutual_scores
from cs3f.method.token_index import VolumeTokenIndex


def _sets(rng, n_volumes, n_tokens=60, d=12):
    centres = rng.standard_normal((8, d))
    return [
        (centres[rng.integers(0, 8, n_tokens)] + 0.3 * rng.standard_normal((n_tokens, d))).astype(
            np.float32
        )
        for _ in range(n_volumes)
    ]


@pytest.mark.parametrize("k", [1, 3, 9])
def test_flat_index_scores_equal_the_pairwise_scorer(k):
    rng = np.random.default_rng(0)
    bank, query = _sets(rng, 9), _sets(rng, 1)[0]
    index = VolumeTokenIndex(bank, "flat", first=4)  # 4 neighbours rarely hold 9 volumes
    (want,) = mutual_scores([query, *bank], k=k, n_references=9)
    np.testing.assert_allclose(index.scores(query, k), want, rtol=1e-5, atol=1e-6)
    per_volume = np.stack(
        [np.sqrt(((query[:, None] - b[None]) ** 2).sum(-1)).min(1) for b in bank], axis=1
    )
    brute = np.sort(per_volume, axis=1)[:, :k]
    np.testing.assert_allclose(index.nearest_volumes(query, k), brute, rtol=1e-5, atol=1e-5)


def test_the_approximate_index_recalls_the_nearest_volumes():
    rng = np.random.default_rng(1)
    bank, query = _sets(rng, 30, 200), _sets(rng, 1, 200)[0]
    exact = VolumeTokenIndex(bank, "flat").nearest_volumes(query, 3)
    approx = VolumeTokenIndex(bank, "ivf").nearest_volumes(query, 3)
    assert np.all(approx >= exact - 1e-5)  # never nearer than the truth
    assert np.isclose(approx, exact, rtol=1e-4).mean() >= 0.95


def test_bad_arguments_are_refused():
    bank = _sets(np.random.default_rng(2), 3)
    with pytest.raises(ValueError, match="kind"):
        VolumeTokenIndex(bank, "lsh")
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
        VolumeTokenIndex(bank).nearest_volumes(bank[0], 4)
