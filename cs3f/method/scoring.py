"""Cross-subject token scores: exact all-pairs scoring and coarse-to-fine (C2F) scoring.

For a token v of volume i and every other volume j of the batch, d(v, C_j) = min over the
tokens w of j of ||v - w||_2. The score of v is the mean of the K smallest of these B - 1
distances, K = k if given else max(1, floor(rho * (B - 1))): a token that has close
look-alikes in at least K other volumes scores low, a token that has none scores high.

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

__all__ = ["coarse_to_fine_scores", "mutual_scores", "neighbour_count"]

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each query volume."""

# Bytes of gathered candidate tokens per C2F chunk: bounds memory whatever L is.
_C2F_CHUNK_BYTES = 32 * 2**20


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


def mutual_scores(
    token_sets: Sequence[np.ndarray],
    rho: float = 0.1,
    k: int | None = None,
    *,
    search: NearestTokens | None = None,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Exact cross-subject scores of every token of every volume.

    Args:
        token_sets: B arrays, ``token_sets[i]`` of shape (N_i, d), N_i >= 1; float16 or
            float32, in memory or memmapped.
        rho: fraction of the other B - 1 volumes to average over (when ``k`` is None).
        k: number of nearest other volumes to average over; overrides ``rho``.
        search: the nearest-token kernel (default: FAISS on the best available device).
        progress: optional ``progress(done, total)`` callback, once per volume.
    Returns:
        B float32 arrays, entry i of shape (N_i,): the mean of the K smallest values of
        ``{min_w in volume j ||v - w||_2 : j != i}`` for every token v of volume i.
    Raises:
        ValueError: fewer than 2 volumes, an empty set, mismatched d, or K out of range.
    """
    n_volumes = len(token_sets)
    k = neighbour_count(n_volumes, rho, k)
    _check_sets(token_sets, "token_sets")
    search = search or NearestTokens()
    nearest = [_KSmallest(t.shape[0], k) for t in token_sets]
    for i in range(n_volumes):
        query = np.ascontiguousarray(token_sets[i], dtype=np.float32)
        for j in range(i + 1, n_volumes):
            i_to_j, j_to_i = search.pair_minima(query, token_sets[j])
            nearest[i].add(i_to_j)
            nearest[j].add(j_to_i)
        if progress:
            progress(i + 1, n_volumes)
    return [acc.mean_distance() for acc in nearest]


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


def _routed_minima(
    query_fine: torch.Tensor,
    query_groups: np.ndarray,
    ref_fine: torch.Tensor,
    candidate_groups: np.ndarray,
) -> np.ndarray:
    """Nearest squared distance of each query fine token among its cell's routed candidates.

    Args:
        query_fine: (Nf_i, d) float32 fine tokens of the query volume.
        query_groups: (Nc_i, h) fine-token rows of each query coarse cell, -1 padded.
        ref_fine: (Nf_j, d) float32 fine tokens of the reference volume.
        candidate_groups: (Nc_i, M) reference fine-token rows routed to each query cell,
            -1 padded.
    Returns:
        (Nf_i,) float32 squared distances.
    """
    d = query_fine.shape[1]
    pad_q = torch.cat([query_fine, query_fine.new_zeros(1, d)])
    pad_r = torch.cat([ref_fine, ref_fine.new_zeros(1, d)])
    norms_q = (pad_q * pad_q).sum(1)
    norms_r = (pad_r * pad_r).sum(1)
    norms_r[-1] = float("inf")  # padding candidates are never nearest
    q_idx = torch.from_numpy(np.where(query_groups < 0, len(query_fine), query_groups))
    c_idx = torch.from_numpy(np.where(candidate_groups < 0, len(ref_fine), candidate_groups))
    out = torch.full((len(query_fine) + 1,), float("inf"))
    chunk = max(1, _C2F_CHUNK_BYTES // (4 * d * max(c_idx.shape[1], q_idx.shape[1])))
    for start in range(0, q_idx.shape[0], chunk):
        qi, ci = q_idx[start : start + chunk], c_idx[start : start + chunk]
        squared = torch.baddbmm(
            norms_q[qi].unsqueeze(2) + norms_r[ci].unsqueeze(1),
            pad_q[qi],
            pad_r[ci].transpose(1, 2),
            alpha=-2.0,
        )  # (chunk, h, M)
        out[qi.reshape(-1)] = squared.amin(dim=2).reshape(-1)
    return out[:-1].clamp_(min=0).numpy()


def coarse_to_fine_scores(
    coarse_sets: Sequence[np.ndarray],
    fine_sets: Sequence[np.ndarray],
    fine_parents: Sequence[np.ndarray],
    n_routes: int = 16,
    rho: float = 0.1,
    k: int | None = None,
    *,
    search: NearestTokens | None = None,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Fine-token scores where each fine token searches only routed parts of each reference.

    A fine token v of volume i whose parent coarse token is c searches, in each other volume
    j, only the fine children of the ``n_routes`` (L) coarse tokens of j nearest to c. The
    nearest-distance estimate is therefore >= the exhaustive one; with L at least the number of
    coarse tokens of j that have children, it equals it. Scores then follow the K rule of
    :func:`mutual_scores`.

    Args:
        coarse_sets: B arrays (Nc_i, d) of coarse tokens (routing keys).
        fine_sets: B arrays (Nf_i, d) of fine tokens.
        fine_parents: B int arrays (Nf_i,), the row in ``coarse_sets[i]`` of each fine token's
            parent cell.
        n_routes: L, coarse cells routed to per reference volume.
    Returns:
        B float32 arrays of shape (Nf_i,).
    """
    n_volumes = len(fine_sets)
    if not len(coarse_sets) == len(fine_parents) == n_volumes:
        raise ValueError("coarse_sets, fine_sets and fine_parents must have one entry per volume")
    k = neighbour_count(n_volumes, rho, k)
    _check_sets(coarse_sets, "coarse_sets")
    _check_sets(fine_sets, "fine_sets")
    if n_routes < 1:
        raise ValueError(f"n_routes (L) must be >= 1, got {n_routes}")
    search = search or NearestTokens()

    parents = [np.asarray(p, dtype=np.int64) for p in fine_parents]
    for i, (p, coarse, fine) in enumerate(zip(parents, coarse_sets, fine_sets)):
        if p.shape != (fine.shape[0],) or p.min() < 0 or p.max() >= coarse.shape[0]:
            raise ValueError(f"fine_parents[{i}] must index rows of coarse_sets[{i}]")
    routable = [np.unique(p) for p in parents]  # coarse cells that have fine children
    children = [
        _padded_groups(np.searchsorted(cells, p), len(cells)) for cells, p in zip(routable, parents)
    ]
    scores = []
    for i in range(n_volumes):
        query_coarse = np.ascontiguousarray(coarse_sets[i], dtype=np.float32)
        query_fine = torch.from_numpy(np.ascontiguousarray(fine_sets[i], dtype=np.float32))
        query_groups = _padded_groups(parents[i], len(query_coarse))
        nearest = _KSmallest(len(query_fine), k)
        for j in range(n_volumes):
            if j == i:
                continue
            ref_cells = np.ascontiguousarray(coarse_sets[j], dtype=np.float32)[routable[j]]
            routes = search.knn(query_coarse, ref_cells, n_routes)  # (Nc_i, L) rows of routable
            candidates = children[j][routes].reshape(len(query_coarse), -1)
            ref_fine = torch.from_numpy(np.ascontiguousarray(fine_sets[j], dtype=np.float32))
            nearest.add(_routed_minima(query_fine, query_groups, ref_fine, candidates))
        scores.append(nearest.mean_distance())
        if progress:
            progress(i + 1, n_volumes)
    return scores
