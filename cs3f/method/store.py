"""Where token sets live between tokenisation and scoring: in memory, or on disk as fp16.

At paper settings a brain gives about 24 MB of coarse tokens and 7x that of fine tokens, so a
batch of 180 does not fit in RAM as float32. A disk-backed store writes each token set as
``.npy`` files (features in float16, indices in int32) and hands back read-only memmaps; the
scorer reads one reference volume at a time, and the OS page cache does the rest.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cs3f.method.tokens import TokenKey, TokenSet

__all__ = ["TokenStore"]


class TokenStore:
    """Token sets indexed by (volume index, :class:`TokenKey`).

    Args:
        root: folder for the ``.npy`` files; ``None`` keeps float32 arrays in memory.
            The folder is created; files already in it are overwritten by ``put``.
        dtype: on-disk feature dtype (float16 halves the footprint; distances then carry
            about 1e-3 relative rounding).
    """

    def __init__(self, root: str | Path | None = None, dtype: np.dtype = np.float16) -> None:
        self.root = Path(root) if root is not None else None
        self.dtype = np.dtype(dtype)
        self._sets: dict[tuple[int, TokenKey], TokenSet] = {}
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    def keys(self) -> list[TokenKey]:
        """The distinct token keys, sorted (axis, layer, level)."""
        return sorted({key for _, key in self._sets})

    def put(self, index: int, key: TokenKey, tokens: TokenSet) -> None:
        if self.root is None:
            self._sets[(index, key)] = tokens
            return
        stem = self.root / f"v{index:05d}_a{key.axis}_{_safe(key.layer)}_{key.level}"
        features = self._write(stem.with_suffix(".features.npy"), tokens.features, self.dtype)
        cells = self._write(stem.with_suffix(".cells.npy"), tokens.cells, np.int32)
        parents = None
        if tokens.parents is not None:
            parents = self._write(stem.with_suffix(".parents.npy"), tokens.parents, np.int32)
        self._sets[(index, key)] = TokenSet(features, cells, tokens.grid, parents)

    def get(self, index: int, key: TokenKey) -> TokenSet:
        return self._sets[(index, key)]

    @staticmethod
    def _write(path: Path, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=array.shape)
        out[...] = array
        out.flush()
        del out
        return np.load(path, mmap_mode="r")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name)
