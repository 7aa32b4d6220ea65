"""The nearest-token kernel: tiled pair blocks reduced both ways, routes, device choice."""

import numpy as np
import pytest

from cs3f.device import resolve_device
from cs3f.method import pairs
from cs3f.method.pairs import NearestTokens


def test_pair_minima_in_tiles_match_numpy_both_ways():
    rng = np.random.default_rng(0)
    search = NearestTokens("cpu", tile_rows=7)  # many tiles, and a buffer that must grow
    for n, m in [(20, 5), (13, 31), (1, 1)]:
        a = rng.standard_normal((n, 6)).astype(np.float16)
        b = rng.standard_normal((m, 6)).astype(np.float32)
        squared = ((a.astype(np.float64)[:, None] - b[None]) ** 2).sum(-1)
        a_to_b, b_to_a = search.pair_minima(a, b)
        np.testing.assert_allclose(a_to_b, squared.min(1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b_to_a, squared.min(0), rtol=1e-4, atol=1e-5)


def test_pair_routes_are_the_nearest_keys_both_ways_from_one_block():
    rng = np.random.default_rng(1)
    search = NearestTokens("cpu", tile_rows=7)  # the column heaps fill across tiles
    a = rng.standard_normal((23, 5)).astype(np.float32)
    b = rng.standard_normal((40, 5)).astype(np.float32)
    a_keys, b_keys = np.array([0, 2, 3, 5, 8, 9, 13, 21, 22]), np.arange(1, 40, 2)
    squared = ((a.astype(np.float64)[:, None] - b[None]) ** 2).sum(-1)
    routes = search.pair_routes(a, b, 3, a_keys, b_keys)
    for got, want in zip(routes[:2], search.pair_minima(a, b)):  # minima over all rows, same bits
        np.testing.assert_array_equal(got, want)
    keys_only = squared[a_keys][:, b_keys]
    want_a = np.sort(np.argsort(keys_only, axis=1)[:, :3], axis=1)
    want_b = np.sort(np.argsort(keys_only.T, axis=1)[:, :3], axis=1)
    np.testing.assert_array_equal(np.sort(routes.a_routes, axis=1), want_a)
    np.testing.assert_array_equal(np.sort(routes.b_routes, axis=1), want_b)
    capped = search.pair_routes(a, b, 16, a_keys, b_keys[:2])  # k capped at the other's keys
    assert capped.a_routes.shape == (9, 2) and capped.b_routes.shape == (2, 9)


def test_cuda_without_a_gpu_build_of_faiss_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(pairs, "resolve_device", lambda device: "cuda")
    monkeypatch.delattr(pairs.faiss, "StandardGpuResources", raising=False)
    with pytest.raises(RuntimeError, match="no GPU support"):
        NearestTokens("cuda")


def test_device_names_are_checked():
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
