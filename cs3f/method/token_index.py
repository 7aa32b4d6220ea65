"""One FAISS index over a reference bank's tokens of one (axis, layer, level), for banks of
thousands of volumes.

A token's score needs its nearest distance to each of its K nearest *distinct* reference
volumes. Every indexed token carries its volume's id, so a nearest-neighbour list sorted by
distance yields them exactly: the first occurrence of each volume in the list is that volume's
nearest token, and the first K distinct volumes are the K nearest volumes, provided the list is
long enough to hold K distinct volumes. :meth:`VolumeTokenIndex.nearest_volumes` checks that and
searches again, twice as deep, for the query tokens whose list was too short.

``kind="flat"`` is exact (the same scores as :func:`~cs3f.method.scoring.mutual_scores` with
``n_references``, to float rounding); ``"ivf"`` is approximate and faster on large banks: its
recall of the K-distinct-volume distances against the flat index is measured by
``bench/bench_bank.py``. (FAISS's HNSW was tried and dropped: on a synthetic bank of 50 volumes
it recalled 27 % of those distances, because the lists this search needs are deep.)
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

__all__ = ["INDEX_KINDS", "VolumeTokenIndex"]

INDEX_KINDS = ("flat", "ivf")


class VolumeTokenIndex:
    """The tokens of B reference volumes in one index.

    Args:
        token_sets: B arrays (N_j, d), any float dtype (memmaps welcome).
        kind: ``"flat"`` (exact) or ``"ivf"`` (``nlist`` cells, default 4 sqrt(tokens), of
            which ``nprobe`` are searched; trained on the tokens themselves, seeded).
        first: neighbours fetched per query token at first (doubled where too few distinct
            volumes came back).
    """

    def __init__(
        self,
        token_sets: Sequence[np.ndarray],
        kind: str = "flat",
        *,
        nlist: int | None = None,
        nprobe: int = 64,
        first: int = 64,
        seed: int = 0,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        if len(token_sets) < 1:
            raise ValueError("an index needs at least one reference volume")
        self.n_volumes = len(token_sets)
        self.volume_of = np.concatenate(
            [np.full(len(t), j, dtype=np.int64) for j, t in enumerate(token_sets)]
        )
        tokens = np.ascontiguousarray(np.concatenate(token_sets), dtype=np.float32)
        d = tokens.shape[1]
        if kind == "flat":
            self.index = faiss.IndexFlatL2(d)
        else:
            cells = nlist or max(1, int(4 * np.sqrt(len(tokens))))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, cells)
            self.index.cp.seed = seed
            self.index.train(tokens)
            self.index.nprobe = nprobe
        self.index.add(tokens)
        self.first = int(first)

    def nearest_volumes(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n, k) float32 distances (not squared) of each query token to its nearest token in
        each of its k nearest distinct volumes, ascending.

        Raises:
            ValueError: k outside [1, number of volumes].
        """
        if not 1 <= k <= self.n_volumes:
            raise ValueError(f"k must be in [1, {self.n_volumes}], got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        out = np.empty((len(queries), k), dtype=np.float32)
        todo = np.arange(len(queries))
        depth = min(max(self.first, k), self.index.ntotal)
        while len(todo):
            squared, ids = self.index.search(queries[todo], depth)
            found, complete = _first_distinct(squared, ids, self.volume_of, k)
            out[todo[complete]] = found[complete]
            if depth >= self.index.ntotal:  # the whole index came back: what it has is all
                if not complete.all():
                    raise RuntimeError("the index returned fewer distinct volumes than it holds")
                break
            todo, depth = todo[~complete], min(2 * depth, self.index.ntotal)
        return np.sqrt(np.maximum(out, 0), out=out)

    def scores(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n,) float32: the mean of each query token's k nearest-volume distances."""
        return self.nearest_volumes(queries, k).mean(axis=1, dtype=np.float64).astype(np.float32)


def _first_distinct(
    squared: np.ndarray, ids: np.ndarray, volume_of: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """From (n, depth) sorted neighbour lists: (n, k) squared distances of each row's first k
    distinct volumes (rows with fewer hold garbage) and (n,) whether the row had k."""
    volumes = np.where(ids >= 0, volume_of[np.maximum(ids, 0)], -1)
    order = np.argsort(volumes, axis=1, kind="stable")  # equal volumes keep distance order
    by_volume = np.take_along_axis(volumes, order, axis=1)
    starts = np.ones_like(by_volume, dtype=bool)
    starts[:, 1:] = by_volume[:, 1:] != by_volume[:, :-1]
    starts &= by_volume >= 0  # -1: no neighbour there
    first = np.zeros_like(starts)
    np.put_along_axis(first, order, starts, axis=1)  # a volume's first place in the list
    complete = first.sum(axis=1) >= k
    columns = np.argsort(~first, axis=1, kind="stable")[:, :k]  # first k firsts, in list order
    return np.take_along_axis(squared, columns, axis=1), complete
