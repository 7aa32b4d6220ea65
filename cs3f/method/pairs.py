"""Nearest-token search between two token sets, on FAISS (CPU, or GPU when it can).

Two primitives serve the whole scorer, each computing one squared-distance block
``||a_r - b_c||^2`` per pair of volumes, once, and reducing it in both directions (which halves
the all-pairs work):

- ``pair_minima(a, b)``: every token of ``a`` its nearest squared distance in ``b`` and every
  token of ``b`` its nearest in ``a`` (exhaustive scoring).
- ``pair_routes(a, b, k, a_keys, b_keys)``: the same minima, and from the same block, for each
  key row of one side the ``k`` nearest key rows of the other (the coarse-to-fine routing step,
  which therefore costs no second search).

On CPU the block is computed by ``faiss.pairwise_L2sqr`` (BLAS sgemm inside) in row tiles into
a reused buffer, so memory stays at ``tile_rows x len(b)`` floats whatever the set sizes. On
CUDA with a GPU build of faiss the block comes from ``faiss.pairwise_distance_gpu``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

import faiss
import numpy as np
import torch

from cs3f.device import resolve_device

__all__ = ["NearestTokens", "PairRoutes"]


def _as_f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 copy-if-needed of a (possibly fp16, possibly memmapped) array."""
    return np.ascontiguousarray(x, dtype=np.float32)


class PairRoutes(NamedTuple):
    """One pair's coarse block reduced four ways (see :meth:`NearestTokens.pair_routes`).

    Attributes:
        a_to_b: (n,) float32 nearest squared distance of each row of ``a`` in ``b``.
        b_to_a: (m,) float32 nearest squared distance of each row of ``b`` in ``a``.
        a_routes: (len(a_keys), k_a) int64 positions in ``b_keys`` of the nearest key rows of
            ``b`` to each key row of ``a``, k_a = min(k, len(b_keys)), in no particular order.
        b_routes: (len(b_keys), k_b) int64 positions in ``a_keys``, likewise.
    """

    a_to_b: np.ndarray
    b_to_a: np.ndarray
    a_routes: np.ndarray
    b_routes: np.ndarray


def _positions(keys: np.ndarray, n: int) -> np.ndarray:
    """(n,) int64 position of each row in ``keys`` (-1 for rows that are not keys)."""
    positions = np.full(n, -1, dtype=np.int64)
    positions[keys] = np.arange(len(keys))
    return positions


def _transpose(source: torch.Tensor, out: torch.Tensor, strip: int = 256) -> None:
    """``out[:] = source.T`` in strips of columns, which keeps both sides in cache (3x faster
    than one strided copy for a 512 x 2,500 tile)."""
    for start in range(0, source.shape[1], strip):
        out[start : start + strip].copy_(source[:, start : start + strip].T)


class _Heaps:
    """Ids of the k smallest values of each of ``n`` rows whose values arrive in column blocks.

    FAISS's binary max-heaps, the ones its exact k-NN search fills, scanning columns in order.
    """

    def __init__(self, n: int, k: int) -> None:
        self.dist = np.full((n, k), np.inf, dtype=np.float32)
        self.ids = np.full((n, k), -1, dtype=np.int64)
        self.heaps = faiss.float_maxheap_array_t()
        self.heaps.nh, self.heaps.k = n, k
        self.heaps.val, self.heaps.ids = faiss.swig_ptr(self.dist), faiss.swig_ptr(self.ids)

    def add(self, values: np.ndarray, first_id: int) -> np.ndarray:
        """Add (n, cols) C-contiguous values whose columns have ids first_id, first_id + 1, ...

        Returns the (n, k) ids so far, unordered; -1 where a row has seen fewer than k values.
        """
        self.heaps.addn(values.shape[1], faiss.swig_ptr(values), first_id, 0, values.shape[0])
        return self.ids


class NearestTokens:
    """Exact nearest-token search on one device.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``. CUDA needs a GPU build of faiss
            (``faiss.StandardGpuResources``); without one it is an error, not a silent CPU run.
        tile_rows: rows of ``a`` per CPU block; 512 keeps a 4096-wide fp32 tile (8 MB) in the
            L3 cache of small CPUs (measured best on the 2-core CI machine).
    """

    def __init__(self, device: str = "auto", tile_rows: int = 512) -> None:
        self.device = resolve_device(device)
        self.tile_rows = int(tile_rows)
        self._buffer = np.empty(0, dtype=np.float32)
        self._gpu = None
        if self.device == "cuda":
            if not hasattr(faiss, "StandardGpuResources"):
                raise RuntimeError(
                    "CUDA is available but this faiss build has no GPU support; install a GPU "
                    "build of faiss or pass device='cpu'"
                )
            importlib.import_module("faiss.contrib.torch_utils")  # faiss then takes CUDA tensors
            self._gpu = faiss.StandardGpuResources()

    @property
    def uses_gpu(self) -> bool:
        return self._gpu is not None

    def pair_minima(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest squared L2 distances across two token sets, both ways, from one block.

        Args:
            a: (n, d) tokens; b: (m, d) tokens (any float dtype, memmaps welcome).
        Returns:
            ``(a_to_b, b_to_a)``: float32 arrays of shape (n,) and (m,), clamped at 0 against
            rounding, holding ``min_c ||a_r - b_c||^2`` and ``min_r ||a_r - b_c||^2``.
        """
        if self.uses_gpu:
            return self._pair_minima_gpu(a, b)
        return self._tiled_minima(_as_f32(a), _as_f32(b))

    def _tiled_minima(
        self,
        a: np.ndarray,
        b: np.ndarray,
        visit: Callable[[int, np.ndarray], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The CPU block of float32 ``a`` and ``b`` in row tiles, reduced to both sides' minima;
        ``visit(start, block)`` then sees each (rows, m) tile, which it may overwrite."""
        n, d = a.shape
        m = b.shape[0]
        tile = min(self.tile_rows, n)
        if self._buffer.size < tile * m:
            self._buffer = np.empty(tile * m, dtype=np.float32)
        a_to_b = torch.empty(n)
        b_to_a = torch.full((m,), float("inf"))
        for start in range(0, n, tile):
            rows = min(tile, n - start)
            block = self._buffer[: rows * m].reshape(rows, m)
            faiss.pairwise_L2sqr(
                d, rows, faiss.swig_ptr(a[start:]), m, faiss.swig_ptr(b), faiss.swig_ptr(block)
            )
            block_t = torch.from_numpy(block)
            a_to_b[start : start + rows] = block_t.amin(dim=1)
            torch.minimum(b_to_a, block_t.amin(dim=0), out=b_to_a)
            if visit is not None:
                visit(start, block)
        return a_to_b.clamp_(min=0).numpy(), b_to_a.clamp_(min=0).numpy()

    def _pair_minima_gpu(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = torch.from_numpy(_as_f32(a)).cuda()
        bt = torch.from_numpy(_as_f32(b)).cuda()
        a_to_b = torch.empty(at.shape[0], device="cuda")
        b_to_a = torch.full((bt.shape[0],), float("inf"), device="cuda")
        tile = max(self.tile_rows, 8192)
        for start in range(0, at.shape[0], tile):
            block = faiss.pairwise_distance_gpu(self._gpu, at[start : start + tile], bt)
            a_to_b[start : start + block.shape[0]] = block.amin(dim=1)
            torch.minimum(b_to_a, block.amin(dim=0), out=b_to_a)
        return a_to_b.clamp_(min=0).cpu().numpy(), b_to_a.clamp_(min=0).cpu().numpy()

    def pair_routes(
        self, a: np.ndarray, b: np.ndarray, k: int, a_keys: np.ndarray, b_keys: np.ndarray
    ) -> PairRoutes:
        """:meth:`pair_minima`, plus each side's k nearest key rows of the other side.

        Args:
            a: (n, d) tokens; b: (m, d) tokens.
            k: neighbours per key row (capped at the other side's number of keys).
            a_keys: sorted int rows of ``a`` that route and may be routed to; b_keys likewise.
        Returns:
            :class:`PairRoutes`; the minima are those of :meth:`pair_minima`, over all rows.
        """
        if self.uses_gpu:
            return self._pair_routes_gpu(a, b, k, a_keys, b_keys)
        a, b = _as_f32(a), _as_f32(b)
        n, m = a.shape[0], b.shape[0]
        k_a, k_b = min(int(k), len(b_keys)), min(int(k), len(a_keys))
        a_routes = np.empty((n, k_a), dtype=np.int64)
        b_heaps = _Heaps(m, k_b)
        not_b_key = torch.from_numpy(np.isin(np.arange(m), b_keys, invert=True))
        not_a_key = torch.from_numpy(np.isin(np.arange(n), a_keys, invert=True))
        some_b_not_keys = bool(not_b_key.any())
        transposed = np.empty(min(self.tile_rows, n) * m, dtype=np.float32)

        def route(start: int, block: np.ndarray) -> None:
            rows = block.shape[0]
            block_t = torch.from_numpy(block)
            if some_b_not_keys:  # only keys are routed to
                block_t[:, not_b_key] = float("inf")
            a_routes[start : start + rows] = _Heaps(rows, k_a).add(block, 0)
            block_t[not_a_key[start : start + rows]] = float("inf")
            columns = transposed[: rows * m].reshape(m, rows)
            _transpose(block_t, torch.from_numpy(columns))
            b_heaps.add(columns, start)

        a_to_b, b_to_a = self._tiled_minima(a, b, route)
        return PairRoutes(
            a_to_b,
            b_to_a,
            _positions(b_keys, m)[a_routes[a_keys]],
            _positions(a_keys, n)[b_heaps.ids[b_keys]],
        )

    def _pair_routes_gpu(
        self, a: np.ndarray, b: np.ndarray, k: int, a_keys: np.ndarray, b_keys: np.ndarray
    ) -> PairRoutes:
        at = torch.from_numpy(_as_f32(a)).cuda()
        bt = torch.from_numpy(_as_f32(b)).cuda()
        block = faiss.pairwise_distance_gpu(self._gpu, at, bt)  # (n, m): coarse sets are small
        a_to_b, b_to_a = block.amin(dim=1), block.amin(dim=0)
        a_idx, b_idx = torch.from_numpy(a_keys).cuda(), torch.from_numpy(b_keys).cuda()
        keys = block[a_idx][:, b_idx]
        a_routes = keys.topk(min(int(k), len(b_keys)), dim=1, largest=False).indices
        b_routes = keys.topk(min(int(k), len(a_keys)), dim=0, largest=False).indices.T
        return PairRoutes(
            a_to_b.clamp_(min=0).cpu().numpy(),
            b_to_a.clamp_(min=0).cpu().numpy(),
            a_routes.cpu().numpy(),
            b_routes.cpu().numpy(),
        )
