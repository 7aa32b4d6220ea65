"""Token scores to voxel maps: trilinear placement, normalised edges, axis concatenation."""

import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

from cs3f.method.maps import concat_axes, fuse_maps, patient_score, token_map
from cs3f.method.tokens import TokenGrid, TokenSet, depth_edges


def full_set(grid, values=None):
    n = int(np.prod(grid.shape))
    return TokenSet(np.zeros((n, 1), np.float32), np.arange(n), grid), values


def test_linear_scores_are_reproduced_between_token_centres():
    grid = TokenGrid(axis=1, edges=depth_edges(30, 4), plane_shape=(16, 24), grid=4)
    tokens, _ = full_set(grid)
    g, y, x = np.unravel_index(tokens.cells, grid.shape)
    depth_centre = (grid.edges[g] + grid.edges[g + 1] - 1) / 2
    row_centre = (y + 0.5) * 16 / 4 - 0.5
    col_centre = (x + 0.5) * 24 / 4 - 0.5
    scores = 2.0 * depth_centre + 0.5 * row_centre - 1.0 * col_centre + 100
    out = token_map(scores, tokens, (16, 30, 24))
    assert out.shape == (16, 30, 24)
    d0, d1, d2 = np.meshgrid(np.arange(16), np.arange(30), np.arange(24), indexing="ij")
    want = 2.0 * d1 + 0.5 * d0 - 1.0 * d2 + 100
    # exact for linear fields up to the last depth centre, which the short last group (slices
    # 28, 29) puts at 28.5, where a uniform grid would assume 29.75
    inside = (d1 >= 1.5) & (d1 <= 28.5) & (d0 >= 1.5) & (d0 <= 13.5) & (d2 >= 2.5) & (d2 <= 20.5)
    np.testing.assert_allclose(out[inside], want[inside], rtol=1e-5)
    # beyond the outermost centre the value is held
    np.testing.assert_allclose(out[5, 29, 10], out[5, 28, 10] + 2.0 * 0.5, rtol=1e-6)


def test_random_scores_match_scipy_trilinear_interpolation():
    grid = TokenGrid(axis=2, edges=depth_edges(20, 3), plane_shape=(12, 18), grid=3)
    tokens, _ = full_set(grid)
    scores = np.random.default_rng(4).random(len(tokens.cells))
    out = token_map(scores, tokens, (12, 18, 20))
    depth = (grid.edges[:-1] + grid.edges[1:] - 1) / 2
    rows, cols = ((np.arange(3) + 0.5) * n / 3 - 0.5 for n in (12, 18))
    on_grid = np.moveaxis(scores.reshape(grid.shape), 0, 2)  # (rows, columns, depth)
    reference = RegularGridInterpolator((rows, cols, depth), on_grid)
    axes = [np.clip(np.arange(n), c[0], c[-1]) for n, c in zip((12, 18, 20), (rows, cols, depth))]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    np.testing.assert_allclose(out, reference(points), rtol=1e-6)


def test_dropped_tokens_do_not_pull_scores_down():
    grid = TokenGrid(axis=0, edges=depth_edges(8, 2), plane_shape=(8, 8), grid=4)
    kept = np.array([0, 1, 4, 5, 16, 17, 20, 21])  # a 2x2x2 corner of the 4x4x4 grid
    tokens = TokenSet(np.zeros((8, 1), np.float32), kept, grid)
    out = token_map(np.full(8, 3.0), tokens, (8, 8, 8))
    assert np.allclose(out[:4, :4, :4], 3.0)
    assert np.allclose(out[out > 0], 3.0)


def test_fusion_masks_and_averages():
    mask = np.zeros((2, 2, 2), bool)
    mask[0] = True
    fused = fuse_maps([np.ones((2, 2, 2)), 3 * np.ones((2, 2, 2))], mask)
    assert fused.dtype == np.float32 and np.all(fused[0] == 2) and np.all(fused[1] == 0)
    assert patient_score(fused) == 2.0
    with pytest.raises(ValueError):
        fuse_maps([], mask)


def test_concat_axes_joins_the_same_cube_from_every_axis():
    n, size = 4, 8  # 4 patches of 2 voxels and depth groups of q = 2 over 8 slices
    rng = np.random.default_rng(0)
    centres = {}
    sets = {}
    for axis in (0, 1, 2):
        grid = TokenGrid(axis, depth_edges(size, 2), (size, size), n)
        cells = np.sort(rng.choice(n**3, size=50, replace=False))
        g, y, x = np.unravel_index(cells, grid.shape)
        cube = np.zeros((len(cells), 3), np.float32)  # the cube's canonical (b0, b1, b2)
        others = [a for a in (0, 1, 2) if a != axis]
        cube[:, axis], cube[:, others[0]], cube[:, others[1]] = g, y, x
        sets[axis] = TokenSet(cube, cells, grid)
        centres[axis] = {tuple(c) for c in cube.astype(int)}
    joined = concat_axes(sets)
    assert joined.features.shape[1] == 9
    for row, cell in zip(joined.features, joined.cells):
        b = np.unravel_index(cell, (n, n, n))
        for axis in (0, 1, 2):
            assert tuple(row[3 * axis : 3 * axis + 3].astype(int)) == b
    assert {tuple(np.unravel_index(c, (n, n, n))) for c in joined.cells} == centres[0] & centres[
        1
    ] & centres[2]


def test_concat_axes_refuses_non_cubic_grids():
    sets = {
        a: TokenSet(np.zeros((1, 1)), np.array([0]), TokenGrid(a, depth_edges(10, 3), (10, 10), 4))
        for a in (0, 1, 2)
    }
    with pytest.raises(ValueError, match="score-level fusion"):
        concat_axes(sets)
