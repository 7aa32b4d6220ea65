"""Cross-subject token scores: exact all-pairs scoring and multiscale coarse-to-fine scoring.

For a token v of volume i and every other volume j of the batch, d(v, C_j) = min over the
tokens w of j of ||v - w||_2. The score of v is the mean of the K smallest of these B - 1
distances, K = k if given else max(1, floor(rho * (B - 1))): a token that has close
look-alikes in at least K other volumes scores low, a token that has none scores high.

With ``n_references`` > 0 the last entries are a reference bank's volumes: every other volume
is scored against them alone (not against the other new ones), K counts the references,
max(1, floor(rho * n_references)), and the references get no scores. A volume so scored gets
the scores it would get as a member of a batch made of it and the references.

Memory: each volume keeps only its running K smallest distances per token (N_i x K floats), and
the reference volumes are read one at a time, so token sets may be disk-backed memmaps
(``cs3f.method.store``) and a batch of 180 volumes never needs all tokens in RAM.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from cs3f.method.pairs import NearestTokens
from cs3f.method.token_index import VolumeTokenIndex

__all__ = ["indexed_scores", "multiscale_scores", "mutual_scores", "neighbour_count"]

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each query volume."""

# Bytes of gathered candidate tokens per C2F chunk: bounds memory whatever L is.
_C2F_CHUNK_BYTES = 32 * 2**20
# Bytes of grouped fine tokens of the scored volumes kept at once (about 18 MB a volume and key
# at the product's 224^3, so 14 volumes): each partner volume is grouped once per such block,
# not once per scored volume (500 new studies against a bank: 36 times, not 500).
_C2F_CELLS_BYTES = 256 * 2**20


def neighbour_count(batch_size: int, rho: float = 0.1, k: int | None = None) -> int:
    """K, the number of nearest other volumes whose distances are averaged.

    ``k`` wins when given; otherwise ``max(1, floor(rho * (batch_size - 1)))``.
    Raises ValueError for fewer than 2 volumes or a K outside [1, batch_size - 1].
    """
    if batch_size < 2:
        raise ValueError(f"cross-subject scoring needs at least 2 volumes, got {batch_size}")
    if k is None:
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        k = max(1, math.floor(rho * (batch_size - 1)))
    if not 1 <= k <= batch_size - 1:
        raise ValueError(f"k must be in [1, {batch_size - 1}] for a batch of {batch_size}, got {k}")
    return int(k)


class _KSmallest:
    """Running K smallest squared distances per token, kept sorted (insertion, K passes)."""

    def __init__(self, n_tokens: int, k: int) -> None:
        self.best = np.full((n_tokens, k), np.inf, dtype=np.float32)

    def add(self, squared: np.ndarray) -> None:
        carry = np.array(squared, dtype=np.float32)
        for col in self.best.T:  # each column is a view; smaller values stay, larger move on
            low = np.minimum(col, carry)
            np.maximum(col, carry, out=carry)
            col[:] = low

    def mean_distance(self) -> np.ndarray:
        """(n_tokens,) float32: mean of the K smallest distances (not squared)."""
        return np.sqrt(self.best).mean(axis=1, dtype=np.float64).astype(np.float32)


def _check_sets(token_sets: Sequence[np.ndarray], name: str) -> int:
    dims = set()
    for i, tokens in enumerate(token_sets):
        if tokens.ndim != 2 or tokens.shape[0] < 1:
            raise ValueError(f"{name}[{i}] must have shape (N >= 1, d), got {tokens.shape}")
        dims.add(tokens.shape[1])
    if len(dims) > 1:
        raise ValueError(f"{name} disagree on the token dimension d: {sorted(dims)}")
    return dims.pop()


def _schedule(n_volumes: int, n_references: int, rho: float, k: int | None) -> tuple[int, int]:
    """(volumes that get scores, K) for a batch (``n_references`` = 0) or a bank run."""
    if n_references == 0:
        return n_volumes, neighbour_count(n_volumes, rho, k)
    if not 0 < n_references < n_volumes:
        raise ValueError(
            f"n_references must leave at least one volume to score and be >= 1, "
            f"got {n_references} of {n_volumes}"
        )
    return n_volumes - n_references, neighbour_count(n_references + 1, rho, k)


def _partners(i: int, n_volumes: int, n_scored: int) -> range:
    """The volumes scored volume i is compared with and that no earlier i was compared with:
    the later volumes of a batch (each pair once), or all the references."""
    return range(i + 1, n_volumes) if n_scored == n_volumes else range(n_scored, n_volumes)


def mutual_scores(
    token_sets: Sequence[np.ndarray],
    rho: float = 0.1,
    k: int | None = None,
    *,
    n_references: int = 0,
    search: NearestTokens | None = None,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Exact cross-subject scores of every token of every volume.

    Args:
        token_sets: B arrays, ``token_sets[i]`` of shape (N_i, d), N_i >= 1; float16 or
            float32, in memory or memmapped.
        rho: fraction of the other B - 1 volumes to average over (when ``k`` is None).
        k: number of nearest other volumes to average over; overrides ``rho``.
        n_references: how many of the last sets are reference volumes (see the module).
        search: the nearest-token kernel (default: FAISS on the best available device).
        progress: optional ``progress(done, total)`` callback, once per scored volume.
    Returns:
        One float32 array per scored volume (all B, or the first B - n_references), entry i
        of shape (N_i,): the mean of the K smallest values of ``{min_w in volume j
        ||v - w||_2}`` over the volumes j it is compared with, for every token v of volume i.
    Raises:
        ValueError: fewer than 2 volumes, an empty set, mismatched d, or K out of range.
    """
    n_volumes = len(token_sets)
    n_scored, k = _schedule(n_volumes, n_references, rho, k)
    _check_sets(token_sets, "token_sets")
    search = search or NearestTokens()
    nearest = [_KSmallest(t.shape[0], k) for t in token_sets[:n_scored]]
    for i in range(n_scored):
        query = np.ascontiguousarray(token_sets[i], dtype=np.float32)
        for j in _partners(i, n_volumes, n_scored):
            i_to_j, j_to_i = search.pair_minima(query, token_sets[j])
            nearest[i].add(i_to_j)
            if j < n_scored:
                nearest[j].add(j_to_i)
        if progress:
            progress(i + 1, n_scored)
    return [acc.mean_distance() for acc in nearest]


def indexed_scores(
    queries: Sequence[np.ndarray],
    index: VolumeTokenIndex,
    rho: float = 0.1,
    k: int | None = None,
    *,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """:func:`mutual_scores` of ``queries`` against references, through an index over them.

    Args:
        queries: the volumes to score, arrays (N_i, d).
        index: the references' tokens (B = ``index.n_volumes`` volumes).
        rho, k, progress: as for :func:`mutual_scores` with ``n_references`` = B.
    Returns:
        One float32 array (N_i,) per query volume; with a flat index the scores of
        :func:`mutual_scores` with ``n_references`` = B, with an approximate one scores
        that are never lower (float rounding aside in both).
    """
    _, k = _schedule(len(queries) + index.n_volumes, index.n_volumes, rho, k)
    _check_sets(queries, "queries")
    out = []
    for i, query in enumerate(queries):
        out.append(index.scores(query, k))
        if progress:
            progress(i + 1, len(queries))
    return out


def _padded_groups(parents: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, max_size) int64 rows of member indices per parent, padded with -1."""
    order = np.argsort(parents, kind="stable")
    counts = np.bincount(parents, minlength=n_groups)
    width = max(int(counts.max(initial=0)), 1)
    table = np.full((n_groups, width), -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(parents)) - np.repeat(starts, counts)
    table[parents[order], rank] = order
    return table


class _Cells:
    """The fine tokens of one volume grouped by parent coarse cell, for routed search.

    Only cells with fine children take part in routing (``keys``, sorted rows of the coarse
    set). Groups are padded to the largest, h; a padding slot has an infinite norm, so it is
    never anyone's nearest token.

    Attributes:
        keys: (n_cells,) int64 coarse rows that have fine children.
        table: (n_cells, h) int64 fine-token row of each slot, -1 for padding.
        tokens: (n_cells, h, d) float32, the cells as queries.
        tokens_t: (n_cells, d, h) float32, the cells as references (contiguous per cell).
        norms: (n_cells, h) float32 squared norms, inf for padding.
    """

    def __init__(self, fine: np.ndarray, parents: np.ndarray, device: str = "cpu") -> None:
        self.keys = np.unique(parents)
        self.table = _padded_groups(np.searchsorted(self.keys, parents), len(self.keys))
        padded = torch.from_numpy(np.ascontiguousarray(fine, dtype=np.float32)).to(device)
        padded = torch.cat([padded, padded.new_zeros(1, padded.shape[1])])
        table = torch.from_numpy(self.table).to(device)
        rows = table.reshape(-1) % len(padded)  # row -1 is the zero padding row
        self.tokens = padded.index_select(0, rows).view(*self.table.shape, -1)
        self.tokens_t = self.tokens.transpose(1, 2).contiguous()
        self.norms = (self.tokens * self.tokens).sum(2)
        self.norms[table < 0] = float("inf")
        self.n_fine = len(fine)

    @property
    def nbytes(self) -> int:
        """Bytes held: the cells as queries and as references, and their norms."""
        held = (self.tokens, self.tokens_t, self.norms)
        return sum(t.element_size() * t.nelement() for t in held)

    def routed_minima(self, ref: _Cells, routes: np.ndarray) -> np.ndarray:
        """(n_fine,) float32 nearest squared distance of each fine token among its routes.

        Args:
            ref: the other volume's cells.
            routes: (n_cells, L) int64 rows of ``ref``'s cells routed to from each cell here.
        """
        n_cells, h, d = self.tokens.shape
        device = self.tokens.device
        best = torch.full((n_cells, h), float("inf"), device=device)
        routes_t = torch.from_numpy(routes).to(device)
        chunk = max(1, _C2F_CHUNK_BYTES // (4 * d * max(h, ref.tokens.shape[1])))
        gathered = torch.empty(min(chunk, n_cells), d, ref.tokens.shape[1], device=device)
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            query, query_norms = self.tokens[start:stop], self.norms[start:stop].unsqueeze(2)
            candidates = gathered[: stop - start]
            for rank in range(routes_t.shape[1]):  # one dense (h x d) @ (d x h) product per cell
                cells = routes_t[start:stop, rank]
                torch.index_select(ref.tokens_t, 0, cells, out=candidates)
                squared = torch.baddbmm(
                    query_norms + ref.norms.index_select(0, cells).unsqueeze(1),
                    query,
                    candidates,
                    alpha=-2.0,
                )
                torch.minimum(best[start:stop], squared.amin(dim=2), out=best[start:stop])
        out = np.empty(self.n_fine, dtype=np.float32)
        slots = self.table >= 0
        out[self.table[slots]] = best.cpu().numpy()[slots]
        return np.maximum(out, 0, out=out)


def multiscale_scores(
    coarse_sets: Sequence[np.ndarray],
    fine_sets: Sequence[np.ndarray],
    fine_parents: Sequence[np.ndarray],
    n_routes: int = 16,
    rho: float = 0.1,
    k: int | None = None,
    *,
    n_references: int = 0,
    search: NearestTokens | None = None,
    progress: Progress | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Coarse scores and coarse-to-fine (C2F) fine scores, from one coarse block per pair.

    A fine token v of volume i whose parent coarse token is c searches, in each other volume
    j, only the fine children of the ``n_routes`` (L) coarse tokens of j nearest to c (among
    those that have children). The nearest-distance estimate is therefore >= the exhaustive
    one; with L at least the number of such coarse tokens of j, it equals it. Scores then follow
    the K rule of :func:`mutual_scores`.

    Each unordered pair of volumes costs one coarse distance block, reduced to both volumes'
    coarse minima (the coarse scores, identical to :func:`mutual_scores`) and to both
    directions' routes, then one dense (h x d) @ (d x h) product per routed pair of cells,
    h being the most fine children of a cell.

    Args:
        coarse_sets: B arrays (Nc_i, d) of coarse tokens (routing keys).
        fine_sets: B arrays (Nf_i, d) of fine tokens.
        fine_parents: B int arrays (Nf_i,), the row in ``coarse_sets[i]`` of each fine token's
            parent cell.
        n_routes: L, coarse cells routed to per reference volume.
        rho, k, n_references, search, progress: as for :func:`mutual_scores`.
    Returns:
        ``(coarse, fine)``: per scored volume, float32 arrays of shape (Nc_i,) and (Nf_i,).
    Memory: every volume's running K smallest distances, (Nc_i + Nf_i) x K floats, and the
    grouped fine tokens of a block of scored volumes (about 256 MB, at least one) and of one
    partner.
    """
    n_volumes = len(fine_sets)
    if not len(coarse_sets) == len(fine_parents) == n_volumes:
        raise ValueError("coarse_sets, fine_sets and fine_parents must have one entry per volume")
    n_scored, k = _schedule(n_volumes, n_references, rho, k)
    _check_sets(coarse_sets, "coarse_sets")
    _check_sets(fine_sets, "fine_sets")
    if n_routes < 1:
        raise ValueError(f"n_routes (L) must be >= 1, got {n_routes}")
    search = search or NearestTokens()
    device = "cuda" if search.uses_gpu else "cpu"
    parents = [np.asarray(p, dtype=np.int64) for p in fine_parents]
    for i, (p, coarse, fine) in enumerate(zip(parents, coarse_sets, fine_sets)):
        if p.shape != (fine.shape[0],) or p.min() < 0 or p.max() >= coarse.shape[0]:
            raise ValueError(f"fine_parents[{i}] must index rows of coarse_sets[{i}]")

    coarse_nearest = [_KSmallest(c.shape[0], k) for c in coarse_sets[:n_scored]]
    fine_nearest = [_KSmallest(f.shape[0], k) for f in fine_sets[:n_scored]]
    start = 0
    while start < n_scored:  # a block of scored volumes, grouped once, against their partners
        block: dict[int, tuple[np.ndarray, _Cells]] = {}
        while start < n_scored and sum(c.nbytes for _, c in block.values()) < _C2F_CELLS_BYTES:
            cells = _Cells(fine_sets[start], parents[start], device)
            block[start] = (np.ascontiguousarray(coarse_sets[start], dtype=np.float32), cells)
            start += 1
        for j in _partners(min(block), n_volumes, n_scored):
            ref = block[j][1] if j in block else _Cells(fine_sets[j], parents[j], device)
            for i, (query_coarse, query) in block.items():
                if j not in _partners(i, n_volumes, n_scored):
                    continue
                pair = search.pair_routes(
                    query_coarse, coarse_sets[j], n_routes, query.keys, ref.keys
                )
                coarse_nearest[i].add(pair.a_to_b)
                fine_nearest[i].add(query.routed_minima(ref, pair.a_routes))
                if j < n_scored:  # a reference gets no scores: its direction is not searched
                    coarse_nearest[j].add(pair.b_to_a)
                    fine_nearest[j].add(ref.routed_minima(query, pair.b_routes))
        if progress:
            progress(start, n_scored)
    return (
        [acc.mean_distance() for acc in coarse_nearest],
        [acc.mean_distance() for acc in fine_nearest],
    )
