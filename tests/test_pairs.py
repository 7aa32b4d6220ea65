"""The nearest-token kernel: tiled pair blocks reduced both ways, kNN, device choice."""

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


def test_knn_returns_the_nearest_rows():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((40, 5)).astype(np.float32)
    queries = rng.standard_normal((9, 5)).astype(np.float32)
    idx = NearestTokens("cpu").knn(queries, base, 3)
    want = np.argsort(((queries[:, None] - base[None]) ** 2).sum(-1), axis=1)[:, :3]
    np.testing.assert_array_equal(idx, want)
    assert NearestTokens("cpu").knn(queries, base[:2], 16).shape == (9, 2)  # k capped at len(base)


def test_cuda_without_a_gpu_build_of_faiss_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(pairs, "resolve_device", lambda device: "cuda")
    monkeypatch.delattr(pairs.faiss, "StandardGpuResources", raising=False)
    with pytest.raises(RuntimeError, match="no GPU support"):
        NearestTokens("cuda")


def test_device_names_are_checked():
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
