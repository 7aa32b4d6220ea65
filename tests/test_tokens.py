"""Tokenisation: shapes, the depth remainder, the projection, foreground skipping."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cs3f.encoders import load_encoder
from cs3f.method.tokens import Tokenizer, TokenKey, TokenSettings, depth_edges, gaussian_projection


class CountingEncoder:
    """Wraps an encoder and records how many slices it was asked to encode."""

    def __init__(self, inner):
        self.inner, self.count = inner, 0
        self.name, self.weights_sha256, self.grid = inner.name, None, inner.grid
        self.layer_names, self.device = inner.layer_names, inner.device

    def encode(self, slices):
        self.count += slices.shape[0]
        return self.inner.encode(slices)


@pytest.fixture(scope="module")
def pixels():
    return load_encoder("pixels", device="cpu")


@pytest.mark.parametrize("shape", [(28, 28, 28), (16, 23, 33)])
def test_token_grid_shapes_cubic_and_non_cubic(pixels, shape):
    settings = TokenSettings(q_coarse=7, q_fine=2, dim=8)
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    sets = Tokenizer(pixels, settings).tokenize(volume, np.ones(shape, bool))
    assert len(sets) == 3 * 1 * 2
    for axis, depth in enumerate(shape):
        coarse = sets[TokenKey(axis, "pixels", "coarse")]
        fine = sets[TokenKey(axis, "pixels", "fine")]
        assert coarse.grid.shape == (-(-depth // 7), 16, 16)
        assert fine.grid.shape == (-(-depth // 2), 16, 16)
        assert coarse.features.shape == (np.prod(coarse.grid.shape), 8)  # full mask: all kept
        assert coarse.grid.plane_shape == tuple(n for a, n in enumerate(shape) if a != axis)
        assert fine.parents.shape == (len(fine.cells),)


def test_remainder_group_is_the_mean_of_the_leftover_slices(pixels):
    settings = TokenSettings(q_coarse=14, q_fine=None, dim=16, axes=(0,))
    assert list(depth_edges(30, 14)) == [0, 14, 28, 30]
    volume = np.random.default_rng(1).random((30, 20, 20), dtype=np.float32)
    tokenizer = Tokenizer(pixels, settings)
    tokens = tokenizer.tokenize(volume, np.ones(volume.shape, bool))[
        TokenKey(0, "pixels", "coarse")
    ]
    (features,) = pixels.encode(torch.from_numpy(volume[28:30]))
    pooled = F.normalize(features.mean(0), dim=-1) @ tokenizer.projection(0, 0, 196)
    last_group = tokens.features.reshape(3, 16, 16, 16)[2]
    torch.testing.assert_close(torch.from_numpy(last_group), pooled, rtol=1e-5, atol=1e-6)


def test_projection_is_fixed_by_its_seed():
    matrix = gaussian_projection(196, 128, (0, 1, 2))
    # Golden values: the same numbers on any machine and NumPy version (raw PCG64 bits).
    np.testing.assert_allclose(
        matrix[0, :4], [-0.01080772, 0.03282979, -0.06769466, 0.04605317], rtol=1e-6
    )
    np.testing.assert_allclose(matrix[-1, -3:], [-0.00074771, 0.009111, 0.01250857], rtol=1e-5)
    np.testing.assert_array_equal(matrix, gaussian_projection(196, 128, (0, 1, 2)))
    assert not np.array_equal(matrix, gaussian_projection(196, 128, (0, 2, 2)))
    big = gaussian_projection(1024, 128, (5,))
    assert abs(big.std() * np.sqrt(128) - 1) < 0.01 and abs(big.mean()) < 0.001


def test_slices_outside_the_mask_are_not_encoded(pixels):
    spy = CountingEncoder(pixels)
    settings = TokenSettings(q_coarse=4, q_fine=2, dim=8, axes=(0,))
    volume = np.random.default_rng(2).random((40, 16, 16), dtype=np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[9:14, 4:8, 4:8] = True  # touches coarse groups 2 and 3 (slices 8..15)
    sets = Tokenizer(spy, settings).tokenize(volume, mask)
    assert spy.count == 8
    coarse = sets[TokenKey(0, "pixels", "coarse")]
    assert set(np.unravel_index(coarse.cells, coarse.grid.shape)[0]) == {2, 3}


def test_fine_parents_point_at_the_enclosing_coarse_cell(pixels):
    settings = TokenSettings(q_coarse=6, q_fine=4, dim=8, axes=(1,), delta=0.2)  # q's do not nest
    shape = (18, 26, 18)
    volume = np.random.default_rng(3).random(shape, dtype=np.float32)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = zz**2 + yy**2 + xx**2 < 0.7
    sets = Tokenizer(pixels, settings).tokenize(volume, mask)
    coarse, fine = sets[TokenKey(1, "pixels", "coarse")], sets[TokenKey(1, "pixels", "fine")]
    g, y, x = np.unravel_index(fine.cells, fine.grid.shape)
    centre = (fine.grid.edges[g] + fine.grid.edges[g + 1] - 1) // 2
    want = np.ravel_multi_index((centre // 6, y, x), coarse.grid.shape)
    np.testing.assert_array_equal(coarse.cells[fine.parents], want)
    assert len(fine.cells) > 0 and len(coarse.cells) < np.prod(coarse.grid.shape)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="delta"):
        TokenSettings(delta=1.0)
    with pytest.raises(ValueError, match="axes"):
        TokenSettings(axes=(0, 0))
