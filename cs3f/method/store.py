"""Where token sets live between tokenisation and scoring: in memory, or on disk as fp16.

At paper settings a brain gives about 24 MB of coarse tokens and 7x that of fine tokens, so a
batch of 180 does not fit in RAM as float32. A disk-backed store writes each token set as
``.npy`` files (features in float16, indices in int32) and hands back read-only memmaps; the
scorer reads one reference volume at a time, and the OS page cache does the rest.

A disk store can describe itself: :meth:`TokenStore.write_index` writes ``index.json`` (every
set's key, file stem and grid), and :meth:`TokenStore.open` reopens the folder from it later,
read-only (a reference bank keeps its volumes this way).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from cs3f.method.tokens import TokenGrid, TokenKey, TokenSet

INDEX = "index.json"


class StoreError(ValueError):
    """A token folder cannot be reopened: its index or a file is missing, unreadable or cut."""


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
        stem = self.root / _stem(index, key)
        features = self._write(stem.with_suffix(".features.npy"), tokens.features, self.dtype)
        cells = self._write(stem.with_suffix(".cells.npy"), tokens.cells, np.int32)
        parents = None
        if tokens.parents is not None:
            parents = self._write(stem.with_suffix(".parents.npy"), tokens.parents, np.int32)
        self._sets[(index, key)] = TokenSet(features, cells, tokens.grid, parents)

    def get(self, index: int, key: TokenKey) -> TokenSet:
        return self._sets[(index, key)]

    def write_index(self) -> None:
        """Write ``index.json`` describing every set put so far (atomically: a temporary file,
        then a rename), so that :meth:`open` can reopen the folder."""
        if self.root is None:
            raise ValueError("an in-memory store has no folder to index")
        entries = [
            {
                "volume": index,
                "key": list(key),
                "stem": _stem(index, key),
                "edges": tokens.grid.edges.tolist(),
                "axis": tokens.grid.axis,
                "plane_shape": list(tokens.grid.plane_shape),
                "grid": tokens.grid.grid,
                "fine": tokens.parents is not None,
            }
            for (index, key), tokens in sorted(self._sets.items())
        ]
        temporary = self.root / f".{INDEX}.tmp"
        temporary.write_text(json.dumps({"dtype": self.dtype.name, "sets": entries}), "utf-8")
        os.replace(temporary, self.root / INDEX)

    @classmethod
    def open(cls, root: str | Path) -> TokenStore:
        """The store a previous :meth:`write_index` described, its arrays as read-only memmaps.

        Raises:
            StoreError: the index is missing or unreadable, or a file is missing, cut short or
                of another shape than the index says (named).
        """
        root = Path(root)
        try:
            index = json.loads((root / INDEX).read_text("utf-8"))
            store = cls(root, np.dtype(index["dtype"]))
            for entry in index["sets"]:
                key = TokenKey(*entry["key"])
                grid = TokenGrid(
                    entry["axis"],
                    np.asarray(entry["edges"], dtype=np.int64),
                    tuple(entry["plane_shape"]),
                    entry["grid"],
                )
                stem = root / entry["stem"]
                arrays = [_load(stem.with_suffix(f".{part}.npy")) for part in ("features", "cells")]
                parents = _load(stem.with_suffix(".parents.npy")) if entry["fine"] else None
                lengths = {len(a) for a in arrays} | (
                    {len(parents)} if parents is not None else set()
                )
                if len(lengths) != 1:
                    raise StoreError(f"{stem.name}: its files disagree on the number of tokens")
                store._sets[(int(entry["volume"]), key)] = TokenSet(*arrays, grid, parents)
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"cannot reopen the token folder {root}: {exc}") from exc
        return store

    @staticmethod
    def _write(path: Path, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=array.shape)
        out[...] = array
        out.flush()
        del out
        return np.load(path, mmap_mode="r")


def _stem(index: int, key: TokenKey) -> str:
    return f"v{index:05d}_a{key.axis}_{re.sub(r'[^A-Za-z0-9]+', '-', key.layer)}_{key.level}"


def _load(path: Path) -> np.ndarray:
    """A read-only memmap of one ``.npy`` file; a cut file raises (numpy checks its length)."""
    return np.load(path, mmap_mode="r")
