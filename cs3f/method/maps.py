"""From token scores to voxel maps: upsampling, fusion over layers and axes, patient scores.

A token's score sits at the centre of its voxel block. Maps are linearly interpolated between
block centres along each of the three grid directions (trilinear) and held constant beyond the
outermost centres. Dropped (background) tokens do not pull their neighbours towards zero: the
interpolation is normalised by the interpolated weight of kept tokens, so a voxel's value is a
weighted mean of the kept tokens around it. Voxels outside the mask score 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cs3f.method.tokens import TokenGrid, TokenSet

__all__ = ["concat_axes", "fuse_maps", "patient_score", "token_map"]


def _interp_matrix(centres: np.ndarray, n_out: int) -> torch.Tensor:
    """(n_out, len(centres)) float64 weights of linear interpolation from ``centres`` to voxels
    0..n_out-1, constant beyond the outermost centres; each row sums to 1."""
    voxels = np.arange(n_out)
    coords = voxels.astype(np.float64)
    hi = np.clip(np.searchsorted(centres, coords), 0, len(centres) - 1)
    lo = np.clip(hi - 1, 0, len(centres) - 1)
    gap = centres[hi] - centres[lo]
    t = np.where(gap > 0, (coords - centres[lo]) / np.where(gap > 0, gap, 1.0), 0.0)
    t = np.clip(t, 0.0, 1.0)
    matrix = np.zeros((n_out, len(centres)))
    np.add.at(matrix, (voxels, lo), 1.0 - t)
    np.add.at(matrix, (voxels, hi), t)
    return torch.from_numpy(matrix)


def _centres(grid: TokenGrid) -> list[np.ndarray]:
    """Voxel-index centres of the token blocks along (depth, rows, columns)."""
    depth = (grid.edges[:-1] + grid.edges[1:] - 1) / 2.0
    planes = [(np.arange(grid.grid) + 0.5) * n / grid.grid - 0.5 for n in grid.plane_shape]
    return [depth, *planes]


def _upsample(on_grid: torch.Tensor, matrices: list[torch.Tensor]) -> torch.Tensor:
    """Separable linear upsampling of a (g0, g1, g2) grid: one product per axis with that axis's
    (n_out, g) matrix from :func:`_interp_matrix`.

    The last axis goes first, while the tensor is small; the result is contiguous.
    """
    out = on_grid
    for dim in reversed(range(out.ndim)):
        out = torch.movedim(torch.tensordot(matrices[dim], out, dims=([1], [dim])), 0, dim)
    return out


def token_map(scores: np.ndarray, tokens: TokenSet, shape: tuple[int, int, int]) -> np.ndarray:
    """Upsample one token set's scores to the (D0, D1, D2) voxel grid.

    Args:
        scores: (N,) scores of the kept tokens, in ``tokens.cells`` order.
        tokens: the token set (its ``cells`` and ``grid`` say where each score sits).
        shape: the volume shape the tokens were cut from.
    Returns:
        (D0, D1, D2) float32 map; 0 where no kept token is near.
    """
    grid = tokens.grid
    cells = torch.from_numpy(np.asarray(tokens.cells, dtype=np.int64))
    on_grid = []
    for cell_values in (np.asarray(scores, dtype=np.float64), 1.0):
        flat = torch.zeros(int(np.prod(grid.shape)), dtype=torch.float64)
        flat[cells] = torch.as_tensor(cell_values, dtype=torch.float64)
        on_grid.append(torch.movedim(flat.view(grid.shape), 0, grid.axis))
    centres = _centres(grid)  # (depth, rows, columns) of the grid -> the volume's axis order
    centres.insert(grid.axis, centres.pop(0))
    matrices = [_interp_matrix(c, n) for c, n in zip(centres, shape)]
    value, weight = (_upsample(t, matrices) for t in on_grid)
    out = torch.where(weight > 1e-6, value / weight.clamp(min=1e-6), torch.zeros_like(value))
    return out.float().numpy()


def fuse_maps(maps: Sequence[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Score-level fusion: the mean of the maps (layers x axes), 0 outside the mask."""
    if not maps:
        raise ValueError("nothing to fuse")
    total = np.zeros(maps[0].shape, dtype=np.float64)
    for one in maps:
        total += one
    fused = (total / len(maps)).astype(np.float32)
    fused[~mask] = 0
    return fused


def patient_score(voxel_map: np.ndarray) -> float:
    """Patient-level score: the largest voxel score."""
    return float(voxel_map.max())


def concat_axes(sets: dict[int, TokenSet]) -> TokenSet:
    """Feature-level fusion (CoDeGraph3D): one token per cube, the three axes' features joined.

    Only defined where the three axes cut the same cubes: a cubic volume whose depth groups
    coincide with the in-plane patches (e.g. 224^3, q = 14, 16 x 16 patches of 14 voxels).
    The result uses axis 0's grid and keeps a cube only when all three axes kept it.

    Raises:
        ValueError: axes missing, or grids that do not describe the same cubes.
    """
    if sorted(sets) != [0, 1, 2]:
        raise ValueError("feature-level fusion needs token sets of all three axes")
    grid0 = sets[0].grid
    n = grid0.grid
    for axis, tokens in sets.items():
        g = tokens.grid
        size = g.plane_shape[0]
        cube_edges = np.round(np.arange(n + 1) * size / n).astype(int)
        if (
            set(g.plane_shape) != {size}
            or len(g.edges) != n + 1
            or not np.array_equal(g.edges, cube_edges)
            or (g.plane_shape != grid0.plane_shape)
        ):
            raise ValueError(
                "feature-level fusion needs a cubic volume whose depth groups equal its patches "
                f"(axis {axis}: {len(g.edges) - 1} groups over {g.edges[-1]} slices, "
                f"{n} patches over {g.plane_shape}); use score-level fusion"
            )
    cube = np.arange(n**3).reshape(n, n, n)  # canonical (b0, b1, b2) order = axis 0's cells
    rows, kept = [], np.ones(n**3, dtype=bool)
    for axis in (0, 1, 2):
        tokens = sets[axis]
        lookup = np.full(n**3, -1, dtype=np.int64)
        lookup[np.asarray(tokens.cells)] = np.arange(len(tokens.cells))
        cell_of_cube = np.argsort(
            np.moveaxis(cube, axis, 0).reshape(-1)
        )  # cube -> this axis's cell
        rows.append(lookup[cell_of_cube])
        kept &= rows[-1] >= 0
    cells = np.flatnonzero(kept)
    features = np.concatenate(
        [np.asarray(sets[a].features)[rows[a][cells]] for a in (0, 1, 2)], axis=1
    )
    return TokenSet(features.astype(np.float32), cells, grid0)
