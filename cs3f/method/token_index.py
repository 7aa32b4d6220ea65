"""One FAISS index over a reference bank's tokens of one (axis, layer, level), for banks of
thousands of volumes.

A token's score needs its nearest distance to each of its K nearest *distinct* reference
volumes. Every indexed token carries its volume's id, so a nearest-neighbour list sorted by
distance yields them exactly: the first occurrence of each volume in the list is that volume's
nearest token, and the first K distinct volumes are the K nearest volumes, provided the list is
long enough to hold K distinct volumes. :meth:`VolumeTokenIndex.neighbours` checks that and
searches again, twice as deep (and, for IVF, through twice as many cells when the searched
cells ran out), for the query tokens whose list was too short.

Two kinds:

- **flat** (:meth:`VolumeTokenIndex.flat`): exact, the same scores as
  :func:`~cs3f.method.scoring.mutual_scores` with ``n_references``, to float rounding. It holds
  the bank's tokens as float32 and compares every query with every one of them.
- **ivf** (:meth:`VolumeTokenIndex.ivf`): approximate. The tokens are split into ``nlist``
  cells (seeded k-means, :func:`train_ivf`) and a query searches the ``nprobe`` cells nearest
  to it, in which the tokens are held as float16 (exactly the bank's stored values, so a token
  that is found has its exact distance). A nearest token outside those cells is missed, and the
  distance found for its volume is then too large, or the volume drops out of the K: the
  approximation can only raise a score. ``nprobe`` is chosen when the index is trained: the
  fewest cells (1, 2, 4, ...) for which the recall on held-out bank volumes reaches a target,
  measured against the exact pairwise search (:class:`IvfLayout` keeps the figures).

FAISS's HNSW was tried in the first benchmark and dropped (27 % of those distances at 50
volumes as that benchmark measured them, against a query foreign to the bank: bench/RESULTS.md);
it was not measured again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from cs3f.method.pairs import NearestTokens

__all__ = [
    "IvfLayout",
    "VolumeTokenIndex",
    "exact_neighbours",
    "recall_of",
    "train_ivf",
]

TRAIN_POINTS_PER_CELL = 64  # k-means sample size per cell (FAISS warns below 39)


@dataclass(frozen=True)
class IvfLayout:
    """A trained IVF partition of one key's bank tokens: what a bank stores to rebuild the
    approximate index without training or assigning anything again.

    Attributes:
        centroids: (nlist, d) float32 cell centres.
        lists: (N,) int32 cell of every bank token, the volumes' tokens in bank order.
        nprobe: cells searched per query token.
        recall: held-out recall of the K nearest distinct-volume distances at ``nprobe`` (0-1;
            see :func:`recall_of`).
        score_error: mean relative error of the held-out token scores at ``nprobe`` (>= 0).
        k: the K the recall was measured for.
    """

    centroids: np.ndarray
    lists: np.ndarray
    nprobe: int
    recall: float
    score_error: float
    k: int

    @property
    def nlist(self) -> int:
        """The number of cells."""
        return len(self.centroids)

    def describe(self) -> str:
        """One line: cells, cells searched, held-out recall and score error at K."""
        return (
            f"ivf, {self.nlist} cells, {self.nprobe} searched, held-out recall "
            f"{self.recall:.4f} at K = {self.k} (score error {self.score_error:.2g})"
        )


class VolumeTokenIndex:
    """The tokens of B reference volumes in one index; build it with :meth:`flat` or :meth:`ivf`
    (the constructor takes an empty FAISS ``index``, the B arrays (N_j, d) and, for IVF, the
    (N,) cell of every token, and adds the tokens one volume at a time).

    Attributes:
        index: the FAISS index, N = sum N_j tokens in volume order.
        kind: ``"flat"`` or ``"ivf"``.
        n_volumes: B.
        volume_of: (N,) int64, each indexed token's volume (0 to B - 1).
        nlist: cells (1 for flat).
        nprobe: cells searched per query (IVF; ``nlist`` would make it exact).
    """

    def __init__(
        self, index: faiss.Index, token_sets: Sequence[np.ndarray], lists: np.ndarray | None
    ) -> None:
        sizes = [len(t) for t in token_sets]
        if lists is not None and len(lists) != sum(sizes):
            raise ValueError(f"the layout has {len(lists)} tokens, the volumes {sum(sizes)}")
        self.index = index
        self.kind = "flat" if lists is None else "ivf"
        self.n_volumes = len(token_sets)
        self.volume_of = np.repeat(np.arange(self.n_volumes, dtype=np.int64), sizes)
        offset = 0
        for tokens in token_sets:  # one volume at a time: memory stays at the index's own
            rows = np.ascontiguousarray(tokens, dtype=np.float32)
            if lists is None:
                index.add(rows)
            else:
                cells = np.ascontiguousarray(lists[offset : offset + len(rows)], dtype=np.int64)
                index.add_core(len(rows), faiss.swig_ptr(rows), None, faiss.swig_ptr(cells))
            offset += len(rows)
        self.nlist = index.nlist if lists is not None else 1
        self.nprobe = 1

    @classmethod
    def flat(cls, token_sets: Sequence[np.ndarray]) -> VolumeTokenIndex:
        """The exact index of B arrays (N_j, d) of any float dtype (memmaps welcome)."""
        return cls(faiss.IndexFlatL2(_dimension(token_sets)), token_sets, None)

    @classmethod
    def ivf(
        cls, token_sets: Sequence[np.ndarray], layout: IvfLayout, nprobe: int | None = None
    ) -> VolumeTokenIndex:
        """The approximate index of the volumes a ``layout`` was trained on (same order),
        searching ``nprobe`` cells (default: the layout's)."""
        d = _dimension(token_sets)
        quantizer = faiss.IndexFlatL2(d)
        quantizer.add(np.ascontiguousarray(layout.centroids, dtype=np.float32))
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, layout.nlist, faiss.ScalarQuantizer.QT_fp16
        )
        index.by_residual = False  # code the tokens themselves: float16 holds them exactly
        index.is_trained = True  # float16 codes need no training; the cells come with the layout
        built = cls(index, token_sets, layout.lists)
        built._quantizer = quantizer  # the index points at it: keep it alive with the index
        built.nprobe = min(int(nprobe or layout.nprobe), layout.nlist)
        return built

    def neighbours(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None, first: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query token's nearest distance to each of its k nearest distinct volumes.

        Args:
            queries: (n, d) tokens.
            k: volumes per query, 1 <= k <= B (B - 1 with ``exclude``).
            exclude: optional (n,) volume id that each query may not take (its own).
            first: neighbours fetched per query at first (at least 2 k).
        Returns:
            ``(distances, volumes)``: (n, k) float32 distances (not squared), ascending, and
            (n, k) int64 the volumes they reach.
        Raises:
            ValueError: k out of range.
        """
        limit = self.n_volumes - (exclude is not None)
        if not 1 <= k <= limit:
            raise ValueError(f"k must be in [1, {limit}], got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        squared = np.empty((len(queries), k), dtype=np.float32)
        volumes = np.empty((len(queries), k), dtype=np.int64)
        todo = np.arange(len(queries))
        total = self.index.ntotal
        depth, nprobe = min(max(first, 2 * k), total), self.nprobe
        while len(todo):
            params = faiss.SearchParametersIVF(nprobe=nprobe) if self.kind == "ivf" else None
            found, ids = self.index.search(queries[todo], depth, params=params)
            owner = exclude[todo] if exclude is not None else None
            found, reached, complete = _first_distinct(found, ids, self.volume_of, k, owner)
            squared[todo[complete]], volumes[todo[complete]] = found[complete], reached[complete]
            if complete.all():
                break
            ran_out = (ids[~complete, -1] < 0).any()  # the searched cells held too few tokens
            if depth >= total and (not ran_out or nprobe >= self.nlist):
                raise RuntimeError("the index returned fewer distinct volumes than it holds")
            todo, depth = todo[~complete], min(2 * depth, total)
            nprobe = min(2 * nprobe, self.nlist) if ran_out else nprobe
        return np.sqrt(np.maximum(squared, 0), out=squared), volumes

    def scores(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n,) float32: the mean of each query token's k nearest-volume distances."""
        distances, _ = self.neighbours(queries, k)
        return distances.mean(axis=1, dtype=np.float64).astype(np.float32)


def _dimension(token_sets: Sequence[np.ndarray]) -> int:
    """d, the one token dimension of B >= 1 arrays (N_j, d)."""
    if not token_sets:
        raise ValueError("an index needs at least one reference volume")
    dims = {t.shape[1] for t in token_sets}
    if len(dims) != 1:
        raise ValueError(f"the volumes disagree on the token dimension d: {sorted(dims)}")
    return dims.pop()


def _first_distinct(
    squared: np.ndarray,
    ids: np.ndarray,
    volume_of: np.ndarray,
    k: int,
    exclude: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From (n, depth) sorted neighbour lists: (n, k) squared distances and volume ids of each
    row's first k distinct volumes other than its ``exclude`` one (rows with fewer hold
    garbage), and (n,) whether the row had k."""
    volumes = np.where(ids >= 0, volume_of[np.maximum(ids, 0)], -1)
    if exclude is not None:
        volumes[volumes == exclude[:, None]] = -1
    order = np.argsort(volumes, axis=1, kind="stable")  # equal volumes keep distance order
    by_volume = np.take_along_axis(volumes, order, axis=1)
    starts = np.ones_like(by_volume, dtype=bool)
    starts[:, 1:] = by_volume[:, 1:] != by_volume[:, :-1]
    starts &= by_volume >= 0  # -1: no neighbour there, or the excluded volume
    first = np.zeros_like(starts)
    np.put_along_axis(first, order, starts, axis=1)  # a volume's first place in the list
    complete = first.sum(axis=1) >= k
    columns = np.argsort(~first, axis=1, kind="stable")[:, :k]  # first k firsts, in list order
    return (
        np.take_along_axis(squared, columns, axis=1),
        np.take_along_axis(volumes, columns, axis=1),
        complete,
    )


def recall_of(
    exact: tuple[np.ndarray, np.ndarray], found: tuple[np.ndarray, np.ndarray], n_volumes: int
) -> tuple[float, float]:
    """How well approximate neighbours match the exact ones.

    Args:
        exact, found: ``(distances, volumes)`` as :meth:`VolumeTokenIndex.neighbours` returns
            them, (n, k) each; ``exact`` from an exact search.
        n_volumes: B, the largest volume id + 1.
    Returns:
        ``(recall, score_error)``: the fraction of the exact (volume, distance) pairs that the
        approximate search returned too, with the same distance (1e-4 relative, 1e-4
        absolute), as ANN libraries define recall at K; and the mean relative error of the
        token scores (the mean of the k distances).
    """
    rows = np.arange(len(found[0]))[:, None]
    reached = np.full((len(found[0]), n_volumes), np.inf, dtype=np.float32)
    reached[rows, found[1]] = found[0]
    hits = np.isclose(reached[rows, exact[1]], exact[0], rtol=1e-4, atol=1e-4)
    truth = exact[0].mean(axis=1, dtype=np.float64)
    error = np.abs(found[0].mean(axis=1, dtype=np.float64) - truth) / np.maximum(truth, 1e-12)
    return float(hits.mean()), float(error.mean())


def _cell_count(n_tokens: int) -> int:
    """nlist: the power of two nearest sqrt(N), with at least 39 tokens per cell."""
    cells = 2 ** round(np.log2(max(np.sqrt(n_tokens), 1)))
    return int(max(1, min(cells, n_tokens // 39)))


def train_ivf(
    token_sets: Sequence[np.ndarray],
    k: int,
    *,
    target: float = 0.98,
    nlist: int | None = None,
    seed: int = 0,
    held_out: int = 8,
    queries_per_volume: int = 128,
) -> IvfLayout:
    """Train the cells of B volumes' tokens and choose nprobe for a recall target.

    The cells: seeded k-means on 64 tokens per cell drawn evenly from the volumes; nlist
    defaults to the power of two nearest sqrt(N). nprobe: the fewest of 1, 2, 4, ... cells for
    which the K nearest distinct volumes of ``queries_per_volume`` tokens of each of
    ``held_out`` volumes (seeded draws; each query's own volume left out, as a new study is not
    in the bank) reach ``target`` recall against the exact pairwise search.

    Args:
        token_sets: B >= 2 arrays (N_j, d), any float dtype (memmaps welcome).
        k: the K that new studies will be scored with, 1 <= k <= B - 1.
        target: recall (0-1] to reach; all cells (exact) when no fewer reach it.
        nlist, seed, held_out, queries_per_volume: as above.
    Returns:
        The layout: cells, every token's cell, the chosen nprobe and its held-out recall and
        score error (:func:`recall_of`), measured at ``k``; seeded, so the same for the same
        arguments on the same machine.
    """
    n_volumes = len(token_sets)
    if n_volumes < 2 or not 1 <= k < n_volumes:
        raise ValueError(f"training needs B >= 2 volumes and 1 <= k < B, got B={n_volumes}, k={k}")
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")
    rng = np.random.default_rng(seed)
    sizes = np.array([len(t) for t in token_sets])
    cells = nlist or _cell_count(int(sizes.sum()))
    per_volume = -(-TRAIN_POINTS_PER_CELL * cells // n_volumes)
    sample = np.concatenate([_rows(t, per_volume, rng) for t in token_sets])
    quantizer = faiss.IndexFlatL2(sample.shape[1])
    clustering = faiss.Clustering(sample.shape[1], cells)
    clustering.niter, clustering.seed = 20, seed
    clustering.train(sample, quantizer)  # leaves the centroids in the quantizer; read them
    # from there, not from clustering.centroids: once SimpleITK is imported after faiss, that
    # std::vector comes back as SimpleITK's proxy class, which faiss's own conversion refuses
    lists = np.concatenate([quantizer.search(_rows(t), 1)[1][:, 0] for t in token_sets])
    centroids = quantizer.reconstruct_n(0, cells)
    layout = IvfLayout(centroids, lists.astype(np.int32), 1, 0.0, 0.0, k)
    index = VolumeTokenIndex.ivf(token_sets, layout)
    owners = np.sort(rng.choice(n_volumes, min(held_out, n_volumes), replace=False))
    queries = [_rows(token_sets[v], queries_per_volume, rng) for v in owners]
    exclude = np.repeat(owners, [len(q) for q in queries])
    queries = np.concatenate(queries)
    exact = exact_neighbours(queries, token_sets, k, exclude)
    nprobe = 1
    while True:
        index.nprobe = nprobe
        recall, error = recall_of(exact, index.neighbours(queries, k, exclude), n_volumes)
        if recall >= target or nprobe >= cells:
            return IvfLayout(layout.centroids, layout.lists, nprobe, recall, error, k)
        nprobe = min(2 * nprobe, cells)


def _rows(
    tokens: np.ndarray, count: int | None = None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """float32 rows of ``tokens``: all, or ``count`` drawn without replacement (sorted)."""
    if count is None or count >= len(tokens):
        return np.ascontiguousarray(tokens, dtype=np.float32)
    chosen = np.sort(rng.choice(len(tokens), count, replace=False))
    return np.ascontiguousarray(tokens[chosen], dtype=np.float32)


def exact_neighbours(
    queries: np.ndarray,
    token_sets: Sequence[np.ndarray],
    k: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`VolumeTokenIndex.neighbours`, exactly, without an index: one pairwise block per
    volume (:meth:`~cs3f.method.pairs.NearestTokens.pair_minima`, on the best device), as the
    pairwise scorer computes them. Memory: (n, B) float32."""
    search = NearestTokens()
    nearest = np.stack([search.pair_minima(queries, t)[0] for t in token_sets], axis=1)
    if exclude is not None:
        nearest[np.arange(len(queries)), exclude] = np.inf
    volumes = np.argsort(nearest, axis=1, kind="stable")[:, :k]
    squared = np.take_along_axis(nearest, volumes, axis=1)
    return np.sqrt(squared), volumes
