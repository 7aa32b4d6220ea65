"""Scoring math against an independent brute-force float64 numpy implementation."""

import math

import numpy as np
import pytest
from conftest import DISTANCE_ATOL

from cs3f.method.scoring import multiscale_scores, mutual_scores, neighbour_count


def brute_force_scores(token_sets, k):
    """The definition, written as plainly as possible in float64."""
    sets = [np.asarray(t, dtype=np.float64) for t in token_sets]
    out = []
    for i, query in enumerate(sets):
        per_volume = []
        for j, ref in enumerate(sets):
            if j != i:
                diff = query[:, None, :] - ref[None, :, :]
                per_volume.append(np.sqrt((diff**2).sum(-1)).min(axis=1))
        distances = np.sort(np.stack(per_volume, axis=1), axis=1)
        out.append(distances[:, :k].mean(axis=1))
    return out


def random_sets(rng, sizes, d=16):
    return [rng.standard_normal((n, d)).astype(np.float32) for n in sizes]


@pytest.mark.parametrize("k", [None, 1, 3])
def test_matches_brute_force_on_unequal_sizes(k):
    rng = np.random.default_rng(0)
    sets = random_sets(rng, [5, 37, 1, 64, 20, 9])
    got = mutual_scores(sets, k=k)
    want = brute_force_scores(sets, k or neighbour_count(len(sets)))
    assert [g.shape for g in got] == [(len(s),) for s in sets]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_rho_rule_and_fp16_memmap_input(tmp_path):
    rng = np.random.default_rng(1)
    sets = random_sets(rng, [30] * 25, d=8)
    stored = []
    for i, s in enumerate(sets):
        mm = np.lib.format.open_memmap(tmp_path / f"{i}.npy", "w+", np.float16, s.shape)
        mm[:] = s
        stored.append(mm)
    k = math.floor(0.2 * 24)
    got = mutual_scores(stored, rho=0.2)
    want = brute_force_scores([s.astype(np.float16) for s in sets], k)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_planted_outlier_scores_highest_in_its_volume():
    rng = np.random.default_rng(2)
    shared = rng.standard_normal((50, 12)).astype(np.float32)
    sets = [shared + 0.01 * rng.standard_normal(shared.shape).astype(np.float32) for _ in range(8)]
    sets[3][17] += 3.0
    scores = mutual_scores(sets)
    assert int(np.argmax(scores[3])) == 17
    assert scores[3][17] > 5 * np.median(scores[3])


def test_permuting_the_batch_permutes_the_output():
    rng = np.random.default_rng(3)
    sets = random_sets(rng, [11, 4, 23, 8, 15])
    base = mutual_scores(sets)
    perm = [3, 0, 4, 1, 2]
    permuted = mutual_scores([sets[p] for p in perm])
    for out_index, p in enumerate(perm):
        np.testing.assert_allclose(permuted[out_index], base[p], rtol=1e-6)


def test_k_guards():
    assert neighbour_count(2) == 1  # floor(0.1 * 1) = 0, never below 1
    assert neighbour_count(3) == 1
    assert neighbour_count(3, k=2) == 2
    assert neighbour_count(180) == 17
    with pytest.raises(ValueError, match="at least 2"):
        mutual_scores([np.zeros((3, 4), np.float32)])
    with pytest.raises(ValueError, match="k must be"):
        neighbour_count(3, k=3)
    rng = np.random.default_rng(4)
    for sizes in ([3, 5], [3, 5, 2]):
        sets = random_sets(rng, sizes)
        for g, w in zip(mutual_scores(sets), brute_force_scores(sets, 1)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        mutual_scores([np.zeros((0, 4), np.float32), np.zeros((2, 4), np.float32)])
    with pytest.raises(ValueError, match="token dimension"):
        mutual_scores([np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32)])


def hierarchical_sets(rng, n_volumes, n_cells=(12, 9, 15, 10, 13), d=8):
    """Coarse tokens with 1-4 fine children each (unequal counts, like masked volumes)."""
    coarse, fine, parents = [], [], []
    for v in range(n_volumes):
        c = rng.standard_normal((n_cells[v % len(n_cells)], d)).astype(np.float32)
        counts = rng.integers(1, 5, size=len(c))
        p = np.repeat(np.arange(len(c)), counts)
        f = c[p] + 0.3 * rng.standard_normal((len(p), d)).astype(np.float32)
        perm = rng.permutation(len(p))  # fine tokens need not be sorted by parent
        coarse.append(c)
        fine.append(f[perm])
        parents.append(p[perm])
    return coarse, fine, parents


def brute_force_c2f(coarse_sets, fine_sets, parents, n_routes, k):
    """Coarse-to-fine fine scores by the definition, in float64: routes from all coarse
    distances, then each fine token's nearest routed child per other volume."""
    out = []
    for i, (coarse_i, fine_i) in enumerate(zip(coarse_sets, fine_sets)):
        per_volume = []
        for j, (coarse_j, fine_j) in enumerate(zip(coarse_sets, fine_sets)):
            if j == i:
                continue
            keys = np.unique(parents[j])
            cell_d = ((coarse_i[:, None, :].astype(np.float64) - coarse_j[keys]) ** 2).sum(-1)
            routes = keys[np.argsort(cell_d, axis=1)[:, :n_routes]]  # (Nc_i, L) coarse rows of j
            fine_d = np.sqrt(((fine_i[:, None, :].astype(np.float64) - fine_j) ** 2).sum(-1))
            allowed = (routes[parents[i]][:, :, None] == parents[j][None, None, :]).any(axis=1)
            per_volume.append(np.where(allowed, fine_d, np.inf).min(axis=1))
        distances = np.sort(np.stack(per_volume, axis=1), axis=1)
        out.append(distances[:, :k].mean(axis=1))
    return out


@pytest.mark.parametrize("n_routes", [1, 3])
def test_c2f_matches_brute_force_routing(n_routes):
    rng = np.random.default_rng(4)
    coarse, fine, parents = hierarchical_sets(rng, 5)
    coarse_scores, fine_scores = multiscale_scores(coarse, fine, parents, n_routes=n_routes, k=2)
    want = brute_force_c2f(coarse, fine, parents, n_routes, k=2)
    for got, w in zip(fine_scores, want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)
    for got, w in zip(coarse_scores, mutual_scores(coarse, k=2)):  # the same block, the same bits
        np.testing.assert_array_equal(got, w)


def test_c2f_routes_only_to_cells_with_children():
    rng = np.random.default_rng(8)
    coarse, fine, parents = hierarchical_sets(rng, 4)
    for v in range(4):  # drop every fine child of the first three cells
        keep = parents[v] >= 3
        fine[v], parents[v] = fine[v][keep], parents[v][keep]
    _, fine_scores = multiscale_scores(coarse, fine, parents, n_routes=2, k=1)
    for got, w in zip(fine_scores, brute_force_c2f(coarse, fine, parents, 2, k=1)):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)


def test_c2f_with_all_cells_equals_exhaustive_fine():
    rng = np.random.default_rng(5)
    coarse, fine, parents = hierarchical_sets(rng, 6)
    _, routed = multiscale_scores(coarse, fine, parents, n_routes=10_000, k=2)
    exhaustive = mutual_scores(fine, k=2)
    for r, e in zip(routed, exhaustive):
        np.testing.assert_allclose(r, e, rtol=1e-5, atol=1e-5)


def test_c2f_with_few_routes_is_an_upper_bound():
    rng = np.random.default_rng(6)
    coarse, fine, parents = hierarchical_sets(rng, 6)
    exhaustive = mutual_scores(fine, k=2)
    for n_routes in (1, 2, 4):
        _, routed = multiscale_scores(coarse, fine, parents, n_routes=n_routes, k=2)
        for r, e in zip(routed, exhaustive):
            assert np.all(r >= e - 1e-5)
    _, strict = multiscale_scores(coarse, fine, parents, n_routes=1, k=2)
    assert any(np.any(r > e + 1e-3) for r, e in zip(strict, exhaustive))


def test_c2f_rejects_parents_out_of_range():
    rng = np.random.default_rng(7)
    coarse, fine, parents = hierarchical_sets(rng, 3)
    parents[1] = parents[1] + 100
    with pytest.raises(ValueError, match="fine_parents\\[1\\]"):
        multiscale_scores(coarse, fine, parents)


def test_scores_against_references_equal_a_batch_of_the_study_and_the_references():
    """A reference bank's contract: new studies scored against B stored volumes get the token
    scores each would get in a batch of those B + 1 (not compared with each other), C and MS."""
    rng = np.random.default_rng(9)
    coarse, fine, parents = hierarchical_sets(rng, 9)
    bank = slice(0, 7)
    new = [7, 8]
    got_c = mutual_scores(coarse[7:] + coarse[bank], rho=0.3, n_references=7)
    got_ms = multiscale_scores(
        coarse[7:] + coarse[bank],
        fine[7:] + fine[bank],
        parents[7:] + parents[bank],
        n_routes=2,
        rho=0.3,
        n_references=7,
    )
    for n, index in enumerate(new):  # alone with the bank, at the end of the batch
        batch = [*range(7), index]
        want_c = mutual_scores([coarse[i] for i in batch], rho=0.3)[-1]
        np.testing.assert_allclose(got_c[n], want_c, rtol=1e-5, atol=DISTANCE_ATOL)
        want_coarse, want_fine = multiscale_scores(
            [coarse[i] for i in batch],
            [fine[i] for i in batch],
            [parents[i] for i in batch],
            n_routes=2,
            rho=0.3,
        )
        np.testing.assert_allclose(got_ms[0][n], want_coarse[-1], rtol=1e-5, atol=DISTANCE_ATOL)
        np.testing.assert_allclose(got_ms[1][n], want_fine[-1], rtol=1e-5, atol=DISTANCE_ATOL)
    assert len(got_c) == len(got_ms[0]) == len(got_ms[1]) == 2  # the references get none


def test_references_must_leave_a_volume_to_score():
    sets = random_sets(np.random.default_rng(10), [5, 6, 7])
    for n_references in (3, -1):
        with pytest.raises(ValueError, match="n_references"):
            mutual_scores(sets, n_references=n_references)
    assert len(mutual_scores(sets, n_references=2)) == 1  # one volume, K = 1 of 2 references


def test_scored_volumes_are_grouped_in_blocks_with_the_same_bits(monkeypatch):
    """MS keeps a block of scored volumes' grouped fine tokens, so each partner is grouped once
    per block, not once per scored volume; the scores are the same bits as one at a time."""
    from cs3f.method import scoring

    rng = np.random.default_rng(10)
    coarse, fine, parents = hierarchical_sets(rng, 9)
    grouped = []

    class Counted(scoring._Cells):
        def __init__(self, *args, **kwargs):
            grouped.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(scoring, "_Cells", Counted)
    runs = {}
    for budget in (scoring._C2F_CELLS_BYTES, 1):  # all scored volumes at once; one at a time
        monkeypatch.setattr(scoring, "_C2F_CELLS_BYTES", budget)
        grouped.clear()
        bank = multiscale_scores(coarse, fine, parents, n_routes=2, k=2, n_references=7)
        runs[budget] = (bank, len(grouped), multiscale_scores(coarse, fine, parents, 2, k=2))
    (bank, counted, batch), (one_bank, one_counted, one_batch) = runs.values()
    assert (counted, one_counted) == (2 + 7, 2 + 2 * 7)
    for got, want in zip([*bank, *batch], [*one_bank, *one_batch]):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
