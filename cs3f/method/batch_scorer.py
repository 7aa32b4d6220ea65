"""The whole batch: volumes in, per-voxel anomaly maps and patient scores out.

    scorer = BatchScorer(load_encoder("pixels"))
    for volume, mask in batch:            # standard-space volumes in [0, 1], bool masks
        scorer.add(volume, mask)          # tokenise now, keep tokens in the store
    result = scorer.score()               # cross-subject scoring of every token set
    voxel_map = result.voxel_map(0, mask_of_volume_0)   # (D0, D1, D2), one at a time

Volumes are added one at a time and maps come back one at a time, so a caller never holds
more than one volume and one map; tokens sit in a :class:`~cs3f.method.store.TokenStore` (give it a
folder for large batches).

Variants (CS3F): ``C`` averages the coarse-token maps, ``F`` the coarse-to-fine fine-token maps,
``MS`` is (C + F) / 2. Fusion: ``score`` (CS3F) averages per-(axis, layer) maps; ``feature``
(CoDeGraph3D) joins the three axes' coarse tokens of each cube before scoring (variant C only,
cubic volumes whose depth groups equal their patches).
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cs3f.device import DEVICES
from cs3f.encoders import SliceEncoder
from cs3f.method.maps import concat_axes, fuse_maps, token_map
from cs3f.method.pairs import NearestTokens
from cs3f.method.scoring import indexed_scores, multiscale_scores, mutual_scores, neighbour_count
from cs3f.method.store import TokenStore
from cs3f.method.token_index import VolumeTokenIndex
from cs3f.method.tokens import COARSE, FINE, Tokenizer, TokenKey, TokenSet, TokenSettings

__all__ = ["VARIANTS", "BatchScorer", "BatchScores", "ScoringSettings"]

VARIANTS = ("C", "F", "MS")
FUSIONS = ("score", "feature")
BANK_SEARCHES = ("auto", "pairwise", "flat", "ivf")

StageProgress = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)``."""

References = Callable[[TokenKey], list[TokenSet]]
"""A reference bank's token sets of one key, one per bank volume (see :meth:`BatchScorer.score`)."""

ReferenceIndex = Callable[[TokenKey], VolumeTokenIndex]
"""The index over a reference bank's token sets of one key (see :meth:`BatchScorer.score`)."""


@dataclass(frozen=True)
class ScoringSettings:
    """Scoring settings; the defaults are the CS3F paper's.

    Attributes:
        rho: fraction of the other volumes whose nearest distances are averaged.
        k: that number directly (overrides ``rho``).
        n_routes: L, coarse cells routed to per reference volume in coarse-to-fine search.
        variant: ``"C"``, ``"F"`` or ``"MS"``.
        fusion: ``"score"`` or ``"feature"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for the nearest-token search.
        bank_index: how a run against a reference bank searches it: ``"pairwise"`` (each bank
            volume in turn, exact), ``"flat"`` (one exact index), ``"ivf"`` (one approximate
            index) or ``"auto"`` (:func:`cs3f.bank_search.bank_search` decides). The indexes
            serve variant C only; a batch run ignores the setting.
    """

    rho: float = 0.1
    k: int | None = None
    n_routes: int = 16
    variant: str = "MS"
    fusion: str = "score"
    device: str = "auto"
    bank_index: str = "auto"

    def __post_init__(self) -> None:
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be >= 1 (or unset), got {self.k}")
        if self.n_routes < 1:
            raise ValueError(f"n_routes must be >= 1, got {self.n_routes}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.fusion == "feature" and self.variant != "C":
            raise ValueError(
                "feature-level fusion is defined for coarse tokens only: use variant 'C'"
            )
        if self.bank_index not in BANK_SEARCHES:
            raise ValueError(f"bank_index must be one of {BANK_SEARCHES}, got {self.bank_index!r}")
        if self.bank_index in ("flat", "ivf") and self.variant != "C":
            raise ValueError(
                f"bank_index {self.bank_index!r} serves variant C only: {self.variant} routes "
                "coarse-to-fine per bank volume, which needs the pairwise search"
            )

    @property
    def levels(self) -> tuple[str, ...]:
        return {"C": (COARSE,), "F": (FINE,), "MS": (COARSE, FINE)}[self.variant]


@dataclass
class BatchScores:
    """Token scores of a scored batch; turns them into voxel maps on demand.

    Attributes:
        token_scores: per token key, one (N_i,) float32 array per volume.
        shapes: the (D0, D1, D2) shape of each volume.
        timings: seconds per stage.
    """

    token_scores: dict[TokenKey, list[np.ndarray]]
    shapes: list[tuple[int, int, int]]
    settings: ScoringSettings
    timings: dict[str, float]
    _sets: Callable[[int, TokenKey], TokenSet] = field(repr=False)

    def voxel_map(self, index: int, mask: np.ndarray, variant: str | None = None) -> np.ndarray:
        """(D0, D1, D2) float32 anomaly map of volume ``index``; 0 outside ``mask``.

        ``variant`` defaults to the scored one; ``C`` or ``F`` of an ``MS`` run also work.
        """
        variant = variant or self.settings.variant
        levels = ScoringSettings(variant=variant).levels
        if mask.shape != self.shapes[index]:
            raise ValueError(f"mask shape {mask.shape} != volume shape {self.shapes[index]}")
        level_maps = []
        for level in levels:
            keys = [key for key in self.token_scores if key.level == level]
            if not keys:
                raise ValueError(f"variant {variant} needs {level} scores, which this run has not")
            maps = [
                token_map(self.token_scores[key][index], self._sets(index, key), mask.shape)
                for key in keys
            ]
            level_maps.append(fuse_maps(maps, mask))
        return fuse_maps(level_maps, mask)


class BatchScorer:
    """Collects a batch's tokens, then scores them all against each other.

    Args:
        encoder: the slice encoder (see :mod:`cs3f.encoders`).
        tokens: tokenisation settings.
        scoring: scoring settings.
        store: where tokens live (default: in memory; pass a disk store for large batches).
    """

    def __init__(
        self,
        encoder: SliceEncoder,
        tokens: TokenSettings | None = None,
        scoring: ScoringSettings | None = None,
        store: TokenStore | None = None,
    ) -> None:
        self.tokens = tokens or TokenSettings()
        self.scoring = scoring or ScoringSettings()
        if FINE in self.scoring.levels and self.tokens.q_fine is None:
            raise ValueError(f"variant {self.scoring.variant} needs fine tokens but q_fine is None")
        if FINE not in self.scoring.levels:
            self.tokens = dataclasses.replace(
                self.tokens, q_fine=None
            )  # never computed, never used
        self.tokenizer = Tokenizer(encoder, self.tokens)
        self.store = store or TokenStore(None)
        self.shapes: list[tuple[int, int, int]] = []
        self.timings: dict[str, float] = defaultdict(float)

    def tokenize(self, volume: np.ndarray, mask: np.ndarray) -> dict[TokenKey, TokenSet]:
        """The token sets of one standard-space volume, not yet kept (see :meth:`add_tokens`).

        Raises:
            ValueError: the mask is empty, or leaves an axis with no token above delta.
        """
        if not mask.any():
            raise ValueError("empty foreground mask: nothing to score")
        start = time.perf_counter()
        token_sets = self.tokenizer.tokenize(volume, mask)
        self.timings["tokenize"] += time.perf_counter() - start
        empty = [key for key, tokens in token_sets.items() if len(tokens.cells) == 0]
        if empty:
            raise ValueError(f"no token has foreground overlap above delta for {empty[0]}")
        return token_sets

    def add_tokens(self, token_sets: dict[TokenKey, TokenSet], shape: tuple[int, ...]) -> int:
        """Keep the token sets of a volume of ``shape``; returns its batch index."""
        index = len(self.shapes)
        for key, tokens in token_sets.items():
            self.store.put(index, key, tokens)
        self.shapes.append(tuple(shape))
        return index

    def add(self, volume: np.ndarray, mask: np.ndarray) -> int:
        """Tokenise one standard-space volume and keep its tokens; returns its batch index.

        Raises:
            ValueError: the mask is empty, or leaves an axis with no token above delta.
        """
        return self.add_tokens(self.tokenize(volume, mask), volume.shape)

    def score(
        self,
        progress: StageProgress | None = None,
        references: References | None = None,
        index: ReferenceIndex | None = None,
    ) -> BatchScores:
        """Score every token of every added volume against the other volumes or, given
        ``references`` (a reference bank's token sets per key), against those alone; with
        ``index`` too (variant C), through the index of each key's references instead of
        pairwise (built once per key, timed as ``bank_index``).

        Feature-level fusion has no reference form: it needs the batch's own cubes.
        """
        n_volumes = len(self.shapes)
        n_references = len(references(self.store.keys()[0])) if references else 0
        if references and self.scoring.fusion == "feature":
            raise ValueError("feature-level fusion cannot score against references")
        if not references:
            neighbour_count(n_volumes, self.scoring.rho, self.scoring.k)  # fail early on B or K
        search = NearestTokens(self.scoring.device)
        volumes = range(n_volumes)
        rule = {
            "rho": self.scoring.rho,
            "k": self.scoring.k,
            "search": search,
            "n_references": n_references,
        }
        keys = self.store.keys()
        scores: dict[TokenKey, list[np.ndarray]] = {}
        sets_of = self.store.get

        def with_references(key: TokenKey) -> list[TokenSet]:
            return [self.store.get(i, key) for i in volumes] + (
                references(key) if references else []
            )

        if self.scoring.fusion == "feature":
            joined: dict[tuple[int, TokenKey], TokenSet] = {}
            for layer in sorted({key.layer for key in keys}):
                key = TokenKey(0, layer, COARSE)
                for i in volumes:
                    joined[(i, key)] = concat_axes(
                        {a: self.store.get(i, TokenKey(a, layer, COARSE)) for a in (0, 1, 2)}
                    )
                scores[key] = self._timed(
                    "score_coarse",
                    progress,
                    key,
                    mutual_scores,
                    [joined[(i, key)].features for i in volumes],
                    **rule,
                )
            sets_of = lambda i, key: joined[(i, key)]
        else:
            coarse_only = self.scoring.levels == (COARSE,)
            for key in keys:
                if coarse_only and index is not None:  # the keys are all coarse
                    start = time.perf_counter()
                    built = index(key)
                    self.timings["bank_index"] += time.perf_counter() - start
                    queries = [self.store.get(i, key).features for i in volumes]
                    scores[key] = self._timed(
                        "score_coarse", progress, key, indexed_scores, queries, built,
                        rho=self.scoring.rho, k=self.scoring.k,
                    )  # fmt: skip
                    del built  # one key's index in memory at a time
                elif coarse_only:
                    features = [t.features for t in with_references(key)]
                    scores[key] = self._timed(
                        "score_coarse", progress, key, mutual_scores, features, **rule
                    )
                elif key.level == FINE:  # the coarse scores come with the fine ones
                    coarse_key = key._replace(level=COARSE)
                    fine_sets = with_references(key)
                    coarse, fine = self._timed(
                        "score_multiscale",
                        progress,
                        key,
                        multiscale_scores,
                        [t.features for t in with_references(coarse_key)],
                        [t.features for t in fine_sets],
                        [t.parents for t in fine_sets],
                        n_routes=self.scoring.n_routes,
                        **rule,
                    )
                    scores[key] = fine
                    if COARSE in self.scoring.levels:
                        scores[coarse_key] = coarse
            scores = {key: scores[key] for key in keys if key in scores}  # the store's order
        return BatchScores(scores, list(self.shapes), self.scoring, dict(self.timings), sets_of)

    def _timed(
        self, stage: str, progress: StageProgress | None, key: TokenKey, fn, *args, **kwargs
    ):
        start = time.perf_counter()
        label = f"{stage} axis {key.axis} {key.layer}"
        report = (lambda done, total: progress(label, done, total)) if progress else None
        out = fn(*args, progress=report, **kwargs)
        self.timings[stage] += time.perf_counter() - start
        return out
