"""The bank index: the K nearest distinct volumes from one FAISS index over all reference
tokens, exact with the flat index (against the pairwise scorer and a numpy brute force, with
lists too short at first), and the approximate IVF index against the exact search: its recall
at the nprobe chosen on held-out volumes, its scores never below the exact ones, and its
widening when the searched cells hold too few volumes."""

import numpy as np
import pytest

from cs3f.method.scoring import mutual_scores
from cs3f.method.token_index import (
    IvfLayout,
    VolumeTokenIndex,
    exact_neighbours,
    recall_of,
    train_ivf,
)


def _sets(rng, n_volumes, n_tokens=60, d=12, centres=None):
    centres = rng.standard_normal((8, d)) if centres is None else centres
    noise = [0.3 * rng.standard_normal((n_tokens, d)) for _ in range(n_volumes)]
    drawn = [centres[rng.integers(0, len(centres), n_tokens)] for _ in range(n_volumes)]
    return [(c + e).astype(np.float16) for c, e in zip(drawn, noise)]  # a bank stores float16


def _brute(query, bank, k, exclude=None):
    """(distances, volumes) of the k nearest distinct volumes, float64 numpy."""
    per_volume = np.stack(
        [
            np.sqrt(((query[:, None].astype(float) - b[None].astype(float)) ** 2).sum(-1)).min(1)
            for b in bank
        ],
        axis=1,
    )
    if exclude is not None:
        per_volume[np.arange(len(query)), exclude] = np.inf
    volumes = np.argsort(per_volume, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(per_volume, volumes, axis=1), volumes


@pytest.mark.parametrize("k", [1, 3, 9])
def test_flat_index_scores_equal_the_pairwise_scorer(k):
    rng = np.random.default_rng(0)
    bank, query = _sets(rng, 9), _sets(rng, 1)[0]
    index = VolumeTokenIndex.flat(bank)
    (want,) = mutual_scores([query, *bank], k=k, n_references=9)
    np.testing.assert_allclose(index.scores(query, k), want, rtol=1e-5, atol=1e-5)
    distances, volumes = index.neighbours(query, k, first=4)  # 4 rarely hold 9 volumes
    brute_distances, brute_volumes = _brute(query, bank, k)
    np.testing.assert_allclose(distances, brute_distances, rtol=1e-5, atol=1e-5)
    assert (volumes == brute_volumes).mean() > 0.99  # ties of float rounding aside


def test_a_query_can_leave_its_own_volume_out():
    rng = np.random.default_rng(4)
    bank = _sets(rng, 6)
    owner = np.repeat(np.arange(6), 10)
    query = np.concatenate([b[:10] for b in bank])  # each query token is in the bank
    distances, volumes = VolumeTokenIndex.flat(bank).neighbours(query, 3, owner, first=2)
    assert not (volumes == owner[:, None]).any()
    np.testing.assert_allclose(distances, _brute(query, bank, 3, owner)[0], atol=1e-5)
    exact = exact_neighbours(query, bank, 3, owner)
    np.testing.assert_allclose(exact[0], distances, atol=1e-5)


def test_ivf_reaches_its_held_out_recall_on_a_new_volume_and_never_scores_lower():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((8, 12))
    bank, query = _sets(rng, 30, 200, centres=centres), _sets(rng, 1, 200, centres=centres)[0]
    layout = train_ivf(bank, 3, target=0.95)
    assert 1 <= layout.nprobe < layout.nlist and layout.recall >= 0.95
    assert len(layout.lists) == 30 * 200 and layout.lists.max() < layout.nlist
    index = VolumeTokenIndex.ivf(bank, layout)
    exact = _brute(query, bank, 3)
    found = index.neighbours(query, 3)
    recall, error = recall_of(exact, found, 30)
    assert recall >= 0.9 and error < 0.01, (recall, error)
    assert np.all(found[0] >= exact[0] - 1e-5)  # every approximate distance is a real one
    exhaustive = VolumeTokenIndex.ivf(bank, layout, nprobe=layout.nlist)
    np.testing.assert_allclose(exhaustive.neighbours(query, 3)[0], exact[0], atol=1e-5)


def test_ivf_searches_more_cells_where_the_searched_ones_hold_too_few_volumes():
    """Each volume's tokens lie around its own centre, so one cell holds about one volume:
    K = 4 volumes need more than the one cell searched."""
    rng = np.random.default_rng(2)
    centres = 4 * rng.standard_normal((12, 12))
    bank = [(c + 0.1 * rng.standard_normal((50, 12))).astype(np.float16) for c in centres]
    cells = np.repeat(np.arange(12), 50).astype(np.int32)
    layout = IvfLayout(centres.astype(np.float32), cells, 1, 0.0, 0.0, 4)
    query = bank[0][:5].astype(np.float32) + 0.01
    distances, volumes = VolumeTokenIndex.ivf(bank, layout).neighbours(query, 4)
    assert all(len(set(row)) == 4 for row in volumes)
    np.testing.assert_allclose(distances, _brute(query, bank, 4)[0], atol=1e-5)


def test_training_and_search_are_seeded_and_repeatable():
    bank = _sets(np.random.default_rng(5), 10, 100)
    first, again = train_ivf(bank, 2, seed=3), train_ivf(bank, 2, seed=3)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    np.testing.assert_array_equal(first.lists, again.lists)
    assert (first.nprobe, first.recall, first.score_error) == (
        again.nprobe, again.recall, again.score_error
    )  # fmt: skip
    assert not np.array_equal(train_ivf(bank, 2, seed=4).centroids, first.centroids)
    query = _sets(np.random.default_rng(6), 1, 100)[0]
    found = [VolumeTokenIndex.ivf(bank, layout).neighbours(query, 2) for layout in (first, again)]
    for part in (0, 1):
        np.testing.assert_array_equal(found[0][part], found[1][part])


def test_recall_counts_volumes_found_at_their_exact_distance():
    exact = (np.array([[1.0, 2.0]]), np.array([[0, 1]]))
    found = (np.array([[1.0, 2.5]]), np.array([[0, 2]]))  # volume 1 missed, 2 in its place
    recall, error = recall_of(exact, found, 3)
    assert recall == 0.5 and error == pytest.approx(0.25 / 1.5)
    farther = (np.array([[1.0, 2.1]]), np.array([[0, 1]]))  # volume 1 at a farther token
    assert recall_of(exact, farther, 3)[0] == 0.5


def test_bad_arguments_are_refused():
    bank = _sets(np.random.default_rng(2), 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
        VolumeTokenIndex.flat(bank).neighbours(bank[0], 4)
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\]"):
        VolumeTokenIndex.flat(bank).neighbours(bank[0], 3, np.zeros(len(bank[0]), int))
    layout = IvfLayout(np.zeros((2, 12), np.float32), np.zeros(10, np.int32), 1, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="the layout has 10 tokens, the volumes 180"):
        VolumeTokenIndex.ivf(bank, layout)
    with pytest.raises(ValueError, match="1 <= k < B"):
        train_ivf(bank, 3)
