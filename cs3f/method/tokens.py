"""Volumetric tokens: slices along each axis, depth pooling, projection, foreground filtering.

For one axis of a volume with S slices of H x W voxels, and one encoder layer:

1. The encoder turns each slice into a P x P grid of C-dim patch features.
2. Depth pooling: consecutive slices are grouped q at a time (coarse q = 14, fine q = 2) and
   their features averaged per patch. When q does not divide S, the last group holds the
   remaining S mod q slices and is averaged over those alone: every slice belongs to exactly
   one group, and group g spans slices ``edges[g]:edges[g + 1]``.
3. Each pooled feature is L2-normalised and projected to d dimensions by a fixed Gaussian
   matrix with N(0, 1/d) entries, seeded by (seed, axis, layer), the same for every volume.
4. A token stands for its q x (H/P) x (W/P) voxel block. Its foreground overlap is the mean of
   the mask over that block; tokens whose overlap is not above delta are dropped. A fine token
   is also dropped when its coarse parent is (only possible when delta > 0 or the q's do not
   nest), so every fine token has a parent for coarse-to-fine routing.

Slices that belong to no kept group of any level are never encoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cs3f.encoders import SliceEncoder

__all__ = [
    "TokenGrid",
    "TokenKey",
    "TokenSet",
    "TokenSettings",
    "Tokenizer",
    "depth_edges",
    "gaussian_projection",
]

COARSE, FINE = "coarse", "fine"


@dataclass(frozen=True)
class TokenSettings:
    """Tokenisation settings; the defaults are the CS3F paper's.

    Attributes:
        q_coarse: slices pooled per coarse token.
        q_fine: slices pooled per fine token; ``None`` for coarse tokens only.
        dim: d, the projected token dimension.
        seed: seed of the projection matrices.
        delta: foreground-overlap threshold in [0, 1); tokens need overlap > delta.
        axes: volume axes to slice along.
        chunk_slices: slices per encoder call (rounded to whole groups of every level).
    """

    q_coarse: int = 14
    q_fine: int | None = 2
    dim: int = 128
    seed: int = 0
    delta: float = 0.0
    axes: tuple[int, ...] = (0, 1, 2)
    chunk_slices: int = 32

    def __post_init__(self) -> None:
        if self.q_coarse < 1 or (self.q_fine is not None and self.q_fine < 1):
            raise ValueError("q_coarse and q_fine must be >= 1")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if not 0 <= self.delta < 1:
            raise ValueError(f"delta must be in [0, 1), got {self.delta}")
        if (
            not self.axes
            or len(set(self.axes)) != len(self.axes)
            or not set(self.axes) <= {0, 1, 2}
        ):
            raise ValueError(f"axes must be distinct values from (0, 1, 2), got {self.axes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.chunk_slices < 1:
            raise ValueError(f"chunk_slices must be >= 1, got {self.chunk_slices}")

    @property
    def levels(self) -> dict[str, int]:
        """Pooling depth q of each level, coarse first."""
        return {COARSE: self.q_coarse} | ({FINE: self.q_fine} if self.q_fine else {})


class TokenKey(NamedTuple):
    """Which token set: volume axis, encoder layer name, level ("coarse" or "fine")."""

    axis: int
    layer: str
    level: str


def depth_edges(n_slices: int, q: int) -> np.ndarray:
    """(G + 1,) slice boundaries of the depth groups: 0, q, 2q, ..., n_slices."""
    return np.append(np.arange(0, n_slices, q), n_slices)


@dataclass(frozen=True)
class TokenGrid:
    """Where the tokens of one (axis, level) sit in the volume.

    Attributes:
        axis: the volume axis slices are cut along.
        edges: (G + 1,) slice boundaries of the depth groups along ``axis``.
        plane_shape: (H, W), the voxel sizes of the two other axes, in increasing axis order.
        grid: P, patches per slice side.
    """

    axis: int
    edges: np.ndarray
    plane_shape: tuple[int, int]
    grid: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(G, P, P): depth groups, then patch rows and columns."""
        return (len(self.edges) - 1, self.grid, self.grid)


@dataclass
class TokenSet:
    """The kept tokens of one (axis, layer, level) of one volume.

    Attributes:
        features: (N, d) float tokens (float32 in memory, float16 in a ``TokenStore``).
        cells: (N,) int64 flat indices of the tokens into ``grid.shape``.
        grid: geometry of the token grid.
        parents: for fine tokens, (N,) int64 rows of their parent in the coarse set of the same
            axis and layer; ``None`` for coarse tokens.
    """

    features: np.ndarray
    cells: np.ndarray
    grid: TokenGrid
    parents: np.ndarray | None = None


def gaussian_projection(channels: int, dim: int, entropy: tuple[int, ...]) -> np.ndarray:
    """(channels, dim) float32 matrix with i.i.d. N(0, 1/dim) entries, the same on any machine.

    Built from raw PCG64 bits (a stream NumPy guarantees) with the Box-Muller transform in
    float64, rather than from a sampler whose algorithm may change between NumPy versions.
    """
    count = channels * dim
    bits = np.random.PCG64(np.random.SeedSequence(list(entropy))).random_raw(
        2 * math.ceil(count / 2)
    )
    u1 = ((bits[0::2] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = (bits[1::2] >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
    radius = np.sqrt(-2.0 * np.log(u1))
    normal = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    return (normal[:count] / math.sqrt(dim)).astype(np.float32).reshape(channels, dim)


def _coverage(n: int, grid: int) -> np.ndarray:
    """(P, n) share of token row i, the interval [i n / P, (i + 1) n / P), covered by voxel h."""
    bounds = np.arange(grid + 1) * n / grid
    low, high = bounds[:-1, None], bounds[1:, None]
    voxels = np.arange(n)[None, :]
    return np.clip(np.minimum(high, voxels + 1) - np.maximum(low, voxels), 0, None) * grid / n


def _block_overlap(mask: torch.Tensor, edges: np.ndarray, grid: int) -> np.ndarray:
    """(G, P, P) foreground fraction of each token's voxel block; mask is (S, H, W) bool.

    A token's block is [i H / P, (i + 1) H / P) x [j W / P, (j + 1) W / P); where P does not
    divide H, a voxel on a block border counts in each block with the share it covers.
    """
    _, h, w = mask.shape
    plane = _coverage(h, grid) @ mask.numpy().astype(np.float64) @ _coverage(w, grid).T
    sums = np.add.reduceat(plane, edges[:-1], axis=0)  # (G, P, P)
    return sums / np.diff(edges)[:, None, None]


def _parent_groups(fine_edges: np.ndarray, q_coarse: int) -> np.ndarray:
    """(Gf,) coarse group containing the centre slice of each fine group."""
    centres = (fine_edges[:-1] + fine_edges[1:] - 1) // 2
    return centres // q_coarse


class Tokenizer:
    """Turns (volume, mask) pairs into token sets with one encoder and fixed settings.

    Projection matrices are built once per (axis, layer) and shared by every volume.
    """

    def __init__(self, encoder: SliceEncoder, settings: TokenSettings | None = None) -> None:
        self.encoder = encoder
        self.settings = settings or TokenSettings()
        self._projections: dict[tuple[int, int, int], torch.Tensor] = {}

    def projection(self, axis: int, layer_index: int, channels: int) -> torch.Tensor:
        """(channels, d) projection of one axis and layer, on the encoder's device."""
        key = (axis, layer_index, channels)
        if key not in self._projections:
            matrix = gaussian_projection(
                channels, self.settings.dim, (self.settings.seed, axis, layer_index)
            )
            self._projections[key] = torch.from_numpy(matrix).to(self.encoder.device)
        return self._projections[key]

    def tokenize(self, volume: np.ndarray, mask: np.ndarray) -> dict[TokenKey, TokenSet]:
        """Token sets of one volume.

        Args:
            volume: (D0, D1, D2) intensities scaled to [0, 1].
            mask: (D0, D1, D2) bool foreground.
        Returns:
            One :class:`TokenSet` (features float32) per (axis, layer, level); a set may be
            empty when the mask is empty.
        """
        if volume.ndim != 3 or volume.shape != mask.shape:
            raise ValueError(
                f"volume and mask must be 3D and alike, got {volume.shape} and {mask.shape}"
            )
        out: dict[TokenKey, TokenSet] = {}
        for axis in self.settings.axes:
            slices = torch.from_numpy(
                np.array(np.moveaxis(volume, axis, 0), dtype=np.float32, order="C")
            )
            plane_mask = torch.from_numpy(
                np.array(np.moveaxis(mask, axis, 0), dtype=bool, order="C")
            )
            out.update(self._tokenize_axis(axis, slices, plane_mask))
        return out

    def _tokenize_axis(
        self, axis: int, slices: torch.Tensor, mask: torch.Tensor
    ) -> dict[TokenKey, TokenSet]:
        n_slices, height, width = slices.shape
        grid = self.encoder.grid
        levels = self.settings.levels
        grids = {
            lv: TokenGrid(axis, depth_edges(n_slices, q), (height, width), grid)
            for lv, q in levels.items()
        }
        keep = {
            lv: _block_overlap(mask, g.edges, grid) > self.settings.delta for lv, g in grids.items()
        }
        if FINE in keep:
            parent_group = _parent_groups(grids[FINE].edges, levels[COARSE])
            keep[FINE] &= keep[COARSE][parent_group]
        needed = np.zeros(n_slices, dtype=bool)
        for lv, g in grids.items():
            kept_groups = keep[lv].any(axis=(1, 2))
            needed |= np.repeat(kept_groups, np.diff(g.edges))

        pooled: dict[tuple[str, int], np.ndarray] = {}
        step = math.lcm(*levels.values())
        chunk = step * max(1, self.settings.chunk_slices // step)
        for start in range(0, n_slices, chunk):
            stop = min(start + chunk, n_slices)
            rows = np.flatnonzero(needed[start:stop])
            if rows.size == 0:
                continue
            layers = self.encoder.encode(slices[start + rows])
            for layer_index, feats in enumerate(layers):
                full = feats.new_zeros((stop - start,) + tuple(feats.shape[1:]))
                full[torch.from_numpy(rows).to(feats.device)] = feats
                proj = self.projection(axis, layer_index, feats.shape[-1])
                for lv, q in levels.items():
                    target = pooled.setdefault(
                        (lv, layer_index),
                        np.zeros(grids[lv].shape + (self.settings.dim,), np.float32),
                    )
                    self._pool_chunk(full, start, q, grids[lv].edges, proj, target)

        out = {}
        for layer_index, layer in enumerate(self.encoder.layer_names):
            coarse_rows = None
            for lv, g in grids.items():
                flat_keep = keep[lv].reshape(-1)
                cells = np.flatnonzero(flat_keep)
                feats = pooled.get(
                    (lv, layer_index), np.zeros(g.shape + (self.settings.dim,), np.float32)
                )
                parents = None
                if lv == COARSE:
                    coarse_rows = np.full(flat_keep.size, -1, dtype=np.int64)
                    coarse_rows[cells] = np.arange(cells.size)
                else:
                    g_idx, y_idx, x_idx = np.unravel_index(cells, g.shape)
                    parent_cells = np.ravel_multi_index(
                        (parent_group[g_idx], y_idx, x_idx), grids[COARSE].shape
                    )
                    parents = coarse_rows[parent_cells]
                out[TokenKey(axis, layer, lv)] = TokenSet(
                    feats.reshape(-1, self.settings.dim)[cells], cells, g, parents
                )
        return out

    @staticmethod
    def _pool_chunk(
        feats: torch.Tensor,
        start: int,
        q: int,
        edges: np.ndarray,
        proj: torch.Tensor,
        target: np.ndarray,
    ) -> None:
        """Mean-pool (n, P, P, C) slice features of a group-aligned chunk into ``target`` groups."""
        n = feats.shape[0]
        group_ids = torch.arange(start, start + n, device=feats.device) // q
        first = start // q
        local = group_ids - first
        n_groups = int(local[-1]) + 1
        sums = feats.new_zeros((n_groups,) + tuple(feats.shape[1:])).index_add_(0, local, feats)
        sizes = torch.from_numpy(np.diff(edges)[first : first + n_groups]).to(feats)
        pooled = F.normalize(sums / sizes.view(-1, 1, 1, 1), dim=-1)
        target[first : first + n_groups] = (pooled @ proj).cpu().numpy()
