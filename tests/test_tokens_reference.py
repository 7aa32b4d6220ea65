"""Tokenizer against a slow float64 numpy reference written from the CS3F equations.

The reference shares no code with ``cs3f/method/tokens.py`` except ``gaussian_projection`` (the
projection matrix, whose values ``test_tokens.py`` pins with golden numbers); the seeding by
(seed, axis, layer index) is the reference's own. Everything else is re-derived, one slice and
one token at a time:

1. slice s of axis a is ``volume[s, :, :]``, ``volume[:, s, :]`` or ``volume[:, :, s]`` (rows =
   the lower of the two other axes), encoded alone;
2. groups of q consecutive slices, the last one holding the remainder, averaged per patch;
3. L2-normalised, then multiplied by the (C, d) N(0, 1/d) matrix;
4. the foreground overlap of a token is the mean of the mask over its q x (H/P) x (W/P) block,
   with fractional block edges i H / P weighted by the covered length of each voxel;
5. tokens with overlap > delta are kept, fine ones only when their coarse parent (the coarse
   group holding the fine group's centre slice) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cs3f.encoders import SliceEncoder
from cs3f.encoders.pixels import PixelEncoder
from cs3f.method.tokens import Tokenizer, TokenKey, TokenSet, TokenSettings, gaussian_projection

ATOL = 1e-5


class PatchStatsEncoder:
    """A deterministic two-layer SliceEncoder for tests; neither layer is translation invariant.

    Layer "quads": the means of the 2 x 2 sub-cells of each patch (C = 4), so a transposed
    slice gives different features. Layer "moments": the patch mean, mean of squares and the
    mean weighted by the patch's row and column position (C = 5).
    """

    name = "patch-stats"
    weights_sha256 = None
    layer_names = ("quads", "moments")

    def __init__(self, grid: int = 4) -> None:
        self.grid = grid
        self.device = torch.device("cpu")

    def encode(self, slices: torch.Tensor) -> list[torch.Tensor]:
        """(S, H, W) float32 -> [(S, P, P, 4), (S, P, P, 5)]."""
        p = self.grid
        x = slices.to(torch.float32).unsqueeze(1)
        n = x.shape[0]
        quads = F.adaptive_avg_pool2d(x, 2 * p)[:, 0].reshape(n, p, 2, p, 2)
        quads = quads.permute(0, 1, 3, 2, 4).reshape(n, p, p, 4)
        mean = F.adaptive_avg_pool2d(x, p)[:, 0]
        square = F.adaptive_avg_pool2d(x * x, p)[:, 0]
        rows = torch.arange(1, p + 1, dtype=torch.float32).view(p, 1).expand(p, p) / p
        cols = rows.T
        moments = torch.stack(
            [mean, square, mean * rows, mean * cols, mean * (1 + rows - cols)], dim=-1
        )
        return [quads.contiguous(), moments.contiguous()]


@dataclass
class RefLevel:
    """Reference tokens of one (axis, level): per layer features, plus geometry."""

    edges: list[int]
    cells: np.ndarray  # (N,) flat indices into (G, P, P), ascending
    features: dict[int, np.ndarray]  # layer index -> (N, d) float64
    overlap: np.ndarray  # (G, P, P) float64
    parent_cells: np.ndarray | None = None  # fine only: (N,) flat coarse cell of each parent


def ref_slice(volume: np.ndarray, axis: int, s: int) -> np.ndarray:
    """Slice s across ``axis``; rows and columns are the two other axes in increasing order."""
    if axis == 0:
        return volume[s, :, :]
    if axis == 1:
        return volume[:, s, :]
    return volume[:, :, s]


def ref_groups(n_slices: int, q: int) -> list[range]:
    """Consecutive groups of q slices; the last one holds the remainder."""
    return [range(a, min(a + q, n_slices)) for a in range(0, n_slices, q)]


def ref_bin_weights(n: int, p: int) -> np.ndarray:
    """(P, n): length of voxel y = [y, y + 1) inside patch i's interval [i n / P, (i + 1) n / P)."""
    weights = np.zeros((p, n))
    for i in range(p):
        lo, hi = i * n / p, (i + 1) * n / p
        for y in range(n):
            weights[i, y] = max(0.0, min(y + 1.0, hi) - max(float(y), lo))
    return weights


def ref_centre_group(group: range, q_coarse: int) -> int:
    """The coarse group holding the centre slice of ``group`` (refuses an ambiguous centre)."""
    a, b = group.start, group.stop
    middles = {(a + b - 1) // 2, (a + b) // 2}  # one slice for odd sizes, two for even
    parents = {m // q_coarse for m in middles}
    if len(parents) != 1:
        raise AssertionError(f"fine group {a}:{b} has its centre on a coarse boundary")
    return parents.pop()


def ref_tokenize(
    encoder: SliceEncoder, volume: np.ndarray, mask: np.ndarray, settings: TokenSettings
) -> dict[tuple[int, str], RefLevel]:
    """Reference tokens keyed by (axis, level), from the CS3F equations, in float64."""
    p = encoder.grid
    out: dict[tuple[int, str], RefLevel] = {}
    for axis in settings.axes:
        n_slices = volume.shape[axis]
        height, width = (n for a, n in enumerate(volume.shape) if a != axis)
        wy, wx = ref_bin_weights(height, p), ref_bin_weights(width, p)
        block_area = (height / p) * (width / p)
        # Per slice: the encoder's features (one slice per call) and the mask's block sums.
        feats: list[list[np.ndarray]] = []  # [slice][layer] -> (P, P, C)
        mask_sums = np.zeros((n_slices, p, p))
        for s in range(n_slices):
            plane = np.ascontiguousarray(ref_slice(volume, axis, s), dtype=np.float32)
            layers = encoder.encode(torch.from_numpy(plane[None]))
            feats.append([f[0].numpy().astype(np.float64) for f in layers])
            m = ref_slice(mask, axis, s).astype(np.float64)
            for i in range(p):
                for j in range(p):
                    mask_sums[s, i, j] = np.sum(wy[i][:, None] * wx[j][None, :] * m)
        levels = {"coarse": settings.q_coarse}
        if settings.q_fine:
            levels["fine"] = settings.q_fine
        for level, q in levels.items():
            groups = ref_groups(n_slices, q)
            overlap = np.zeros((len(groups), p, p))
            for g, group in enumerate(groups):
                for i in range(p):
                    for j in range(p):
                        total = sum(mask_sums[s, i, j] for s in group)
                        overlap[g, i, j] = total / (len(group) * block_area)
            cells, parent_cells = [], []
            for g, group in enumerate(groups):
                for i in range(p):
                    for j in range(p):
                        if not overlap[g, i, j] > settings.delta:
                            continue
                        if level == "fine":
                            coarse = out[(axis, "coarse")]
                            parent_g = ref_centre_group(group, settings.q_coarse)
                            parent = (parent_g * p + i) * p + j
                            if not coarse.overlap[parent_g, i, j] > settings.delta:
                                continue
                            parent_cells.append(parent)
                        cells.append((g * p + i) * p + j)
            features: dict[int, np.ndarray] = {}
            for layer, _ in enumerate(encoder.layer_names):
                channels = feats[0][layer].shape[-1]
                proj = gaussian_projection(
                    channels, settings.dim, (settings.seed, axis, layer)
                ).astype(np.float64)
                rows = []
                for cell in cells:
                    g, rest = divmod(cell, p * p)
                    i, j = divmod(rest, p)
                    mean = sum(feats[s][layer][i, j] for s in groups[g]) / len(groups[g])
                    rows.append((mean / np.linalg.norm(mean)) @ proj)
                features[layer] = np.array(rows).reshape(len(cells), settings.dim)
            out[(axis, level)] = RefLevel(
                edges=[g.start for g in groups] + [n_slices],
                cells=np.array(cells, dtype=np.int64),
                features=features,
                overlap=overlap,
                parent_cells=np.array(parent_cells, dtype=np.int64) if level == "fine" else None,
            )
    return out


def assert_matches_reference(
    encoder: SliceEncoder, volume: np.ndarray, mask: np.ndarray, settings: TokenSettings
) -> dict[tuple[int, str], RefLevel]:
    """Tokenize with the product and the reference and compare everything the sets expose."""
    sets = Tokenizer(encoder, settings).tokenize(volume, mask)
    ref = ref_tokenize(encoder, volume, mask, settings)
    levels = ["coarse"] + (["fine"] if settings.q_fine else [])
    want_keys = {
        TokenKey(a, layer, lv)
        for a in settings.axes
        for layer in encoder.layer_names
        for lv in levels
    }
    assert set(sets) == want_keys
    p = encoder.grid
    for (axis, level), r in ref.items():
        # No reference overlap sits on the threshold, so a float32 product cannot tip over it.
        if settings.delta > 0:
            assert np.min(np.abs(r.overlap - settings.delta)) > 1e-6
        for layer_index, layer in enumerate(encoder.layer_names):
            got: TokenSet = sets[TokenKey(axis, layer, level)]
            where = f"axis {axis}, layer {layer}, {level}"
            assert got.grid.axis == axis, where
            np.testing.assert_array_equal(got.grid.edges, r.edges, err_msg=where)
            plane = tuple(n for a, n in enumerate(volume.shape) if a != axis)
            assert got.grid.plane_shape == plane, where
            assert got.grid.shape == (len(r.edges) - 1, p, p), where
            assert got.features.shape == (len(got.cells), settings.dim), where
            order = np.argsort(got.cells, kind="stable")
            np.testing.assert_array_equal(got.cells[order], r.cells, err_msg=where)
            np.testing.assert_allclose(
                got.features[order].astype(np.float64),
                r.features[layer_index],
                rtol=0,
                atol=ATOL,
                err_msg=where,
            )
            if level == "coarse":
                assert got.parents is None, where
            else:
                coarse = sets[TokenKey(axis, layer, "coarse")]
                np.testing.assert_array_equal(
                    coarse.cells[got.parents[order]], r.parent_cells, err_msg=where
                )
    return ref


def ellipsoid(
    shape: tuple[int, int, int], centre: tuple[float, ...], radii: tuple[float, ...]
) -> np.ndarray:
    """Bool mask of an axis-aligned ellipsoid (centre and radii in voxels)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) < 1.0


def random_volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Float32 intensities in [0.05, 1): no all-zero patch, so every norm is well defined."""
    rng = np.random.default_rng(seed)
    return (0.05 + 0.95 * rng.random(shape)).astype(np.float32)


def kept_fraction(ref: dict[tuple[int, str], RefLevel], p: int) -> float:
    """Share of all grid cells that the reference keeps, over every axis and level."""
    kept = sum(r.cells.size for r in ref.values())
    total = sum((len(r.edges) - 1) * p * p for r in ref.values())
    return kept / total


def assert_remainders_kept(
    ref: dict[tuple[int, str], RefLevel], shape: tuple[int, ...], settings: TokenSettings, p: int
) -> None:
    """The case exercises the remainder: every short last group keeps some tokens."""
    for (axis, level), r in ref.items():
        q = settings.q_coarse if level == "coarse" else settings.q_fine
        if shape[axis] % q:
            assert np.any(r.cells // (p * p) == len(r.edges) - 2), (axis, level)


NON_CUBIC = (30, 28, 33)  # 30 and 33 are not multiples of the 4-patch grid, nor of q = 4 or 6


@pytest.mark.parametrize("chunk_slices", [32, 1])
def test_pixels_encoder_non_cubic_remainders_delta_zero(chunk_slices: int) -> None:
    """Pixels encoder, every axis, q's that leave remainders, a mask that drops tokens."""
    encoder = PixelEncoder(patch=3, grid=4, device="cpu")
    settings = TokenSettings(
        q_coarse=6, q_fine=2, dim=16, seed=3, delta=0.0, chunk_slices=chunk_slices
    )
    volume = random_volume(NON_CUBIC, 0)
    mask = ellipsoid(NON_CUBIC, (16.0, 16.0, 20.0), (12.0, 11.0, 13.0))
    ref = assert_matches_reference(encoder, volume, mask, settings)
    assert 0.1 < kept_fraction(ref, 4) < 0.9
    assert_remainders_kept(ref, NON_CUBIC, settings, 4)
    assert all(len(r.cells) for r in ref.values())


def test_two_layer_encoder_nested_q_delta_zero() -> None:
    """Two layers (different C, separately seeded projections), remainder on every axis."""
    encoder = PatchStatsEncoder(grid=4)
    settings = TokenSettings(q_coarse=4, q_fine=2, dim=8, seed=1, delta=0.0, chunk_slices=8)
    volume = random_volume(NON_CUBIC, 1)
    mask = ellipsoid(NON_CUBIC, (18.0, 16.0, 20.0), (12.0, 12.0, 13.0))
    ref = assert_matches_reference(encoder, volume, mask, settings)
    assert 0.1 < kept_fraction(ref, 4) < 0.9
    assert_remainders_kept(ref, NON_CUBIC, settings, 4)


def test_two_layer_encoder_non_nested_q_delta_above_zero() -> None:
    """delta > 0 and q's that do not nest, so parents matter; planes divisible by the grid."""
    shape = (32, 28, 20)  # planes divide by P = 4; depths leave remainders for q = 8 and q = 3
    encoder = PatchStatsEncoder(grid=4)
    settings = TokenSettings(q_coarse=8, q_fine=3, dim=12, seed=7, delta=0.3, chunk_slices=5)
    volume = random_volume(shape, 2)
    mask = ellipsoid(shape, (18.0, 16.0, 12.0), (14.0, 12.0, 9.0))  # into the remainder groups
    ref = assert_matches_reference(encoder, volume, mask, settings)
    assert 0.1 < kept_fraction(ref, 4) < 0.9
    assert_remainders_kept(ref, shape, settings, 4)
    # Some fine tokens above delta are dropped only because their parent is not kept.
    dropped_for_parent = 0
    for axis in settings.axes:
        coarse, fine = ref[(axis, "coarse")], ref[(axis, "fine")]
        for g in range(len(fine.edges) - 1):
            parent_g = ref_centre_group(range(fine.edges[g], fine.edges[g + 1]), 8)
            dropped_for_parent += int(
                np.sum((fine.overlap[g] > 0.3) & ~(coarse.overlap[parent_g] > 0.3))
            )
    assert dropped_for_parent > 0


def test_fine_group_reaching_into_a_dropped_coarse_group() -> None:
    """Fine group 6:9 is kept under coarse group 0 while coarse group 1 (8:16) is dropped whole;
    its slice 8 must still be encoded."""
    shape = (20, 16, 16)
    encoder = PatchStatsEncoder(grid=4)
    settings = TokenSettings(q_coarse=8, q_fine=3, dim=8, delta=0.3, axes=(0,), chunk_slices=4)
    mask = np.zeros(shape, bool)
    mask[:9, 2:14, 3:11] = True
    ref = assert_matches_reference(encoder, random_volume(shape, 5), mask, settings)
    coarse_groups = set(ref[(0, "coarse")].cells // 16)
    fine_groups = set(ref[(0, "fine")].cells // 16)
    assert coarse_groups == {0} and 2 in fine_groups


def test_single_axis_and_coarse_only() -> None:
    """A subset of axes and no fine level."""
    encoder = PatchStatsEncoder(grid=4)
    settings = TokenSettings(q_coarse=5, q_fine=None, dim=8, delta=0.0, axes=(2, 1))
    volume = random_volume(NON_CUBIC, 3)
    mask = ellipsoid(NON_CUBIC, (15.0, 14.0, 16.0), (9.0, 12.0, 14.0))
    assert_matches_reference(encoder, volume, mask, settings)


def test_empty_mask_gives_empty_sets() -> None:
    """No foreground: every set exists and is empty."""
    encoder = PatchStatsEncoder(grid=4)
    settings = TokenSettings(q_coarse=4, q_fine=2, dim=8)
    volume = random_volume((12, 16, 20), 4)
    assert_matches_reference(encoder, volume, np.zeros(volume.shape, bool), settings)


def test_overlap_on_planes_not_divisible_by_the_grid_delta_above_zero() -> None:
    """A 6-row plane, 4 patch rows of 1.5 voxels: a foreground row 1 covers a third of patch
    rows 0 and 1, so with delta = 0.4 no token is kept."""
    encoder = PixelEncoder(patch=2, grid=4, device="cpu")
    settings = TokenSettings(q_coarse=1, q_fine=None, dim=4, delta=0.4, axes=(0,))
    mask = np.zeros((1, 6, 4), bool)
    mask[0, 1, :] = True
    ref = ref_tokenize(encoder, np.full(mask.shape, 0.5, np.float32), mask, settings)
    np.testing.assert_allclose(ref[(0, "coarse")].overlap[0, :2], 1 / 3)
    assert_matches_reference(encoder, np.full(mask.shape, 0.5, np.float32), mask, settings)
