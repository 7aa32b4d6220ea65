"""Nearest-token search between two token sets, on FAISS (CPU, or GPU when it can).

Two primitives serve the whole scorer:

- ``pair_minima(a, b)``: one squared-distance block ``||a_r - b_c||^2`` computed once and
  reduced in both directions, giving every token of ``a`` its nearest squared distance in ``b``
  and every token of ``b`` its nearest in ``a``. Exhaustive scoring calls it once per unordered
  pair of volumes, which halves the all-pairs work.
- ``knn(queries, base, k)``: indices of the ``k`` nearest ``base`` rows of each query (the
  coarse-to-fine routing step).

On CPU the block is computed by ``faiss.pairwise_L2sqr`` (BLAS sgemm inside) in row tiles into
a reused buffer, so memory stays at ``tile_rows x len(b)`` floats whatever the set sizes. On
CUDA with a GPU build of faiss the block comes from ``faiss.pairwise_distance_gpu``.
"""

from __future__ import annotations

import importlib

import faiss
import numpy as np
import torch

from cs3f.device import resolve_device

__all__ = ["NearestTokens"]


def _as_f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 copy-if-needed of a (possibly fp16, possibly memmapped) array."""
    return np.ascontiguousarray(x, dtype=np.float32)


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
        a, b = _as_f32(a), _as_f32(b)
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

    def knn(self, queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
        """Indices (n, min(k, len(base))) int64 of the nearest ``base`` rows of each query."""
        k = min(int(k), base.shape[0])
        q, b = _as_f32(queries), _as_f32(base)
        if self.uses_gpu:
            _, idx = faiss.knn_gpu(self._gpu, q, b, k)
        else:
            _, idx = faiss.knn(q, b, k)
        return idx.astype(np.int64, copy=False)
