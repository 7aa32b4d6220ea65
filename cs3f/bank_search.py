"""How a screening searches a reference bank (``scoring.bank_index``), and the approximate
index a bank keeps for that search.

- ``pairwise``: each new study against each bank volume in turn
  (:func:`~cs3f.method.scoring.mutual_scores`, :func:`~cs3f.method.scoring.multiscale_scores`):
  exact, and the only search for variants MS and F, whose coarse-to-fine step routes per bank
  volume from the pair's own coarse block (an index over all volumes has no such block).
- ``flat``: one exact FAISS index over the bank's tokens of each key: the scores of
  ``pairwise`` to float rounding, but slower on a CPU (the same distances, then deep neighbour
  lists) and the tokens held in memory as float32; the index path's exact reference.
- ``ivf``: the approximate index (:class:`~cs3f.method.token_index.VolumeTokenIndex`) from the
  layout the bank stores (:func:`index_bank`, on every bank write), or trained for this run
  when the bank has none. Scores are never lower than exact ones.
- ``auto`` (the default): ``ivf`` for variant C against a bank of at least
  :data:`AUTO_IVF_VOLUMES` volumes whose stored index reached :data:`RECALL_TARGET` on held-out
  volumes; ``pairwise`` otherwise: exact, and 7-9 s for one study's 3 axes against 200
  volumes, 42-55 s against 1,000 (bench/RESULTS.md, "Reference bank at scale").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from cs3f.bank import ReferenceBank
from cs3f.method.batch_scorer import ScoringSettings
from cs3f.method.scoring import neighbour_count
from cs3f.method.token_index import IvfLayout, VolumeTokenIndex, train_ivf
from cs3f.method.tokens import COARSE, FINE, TokenKey

__all__ = [
    "AUTO_IVF_VOLUMES",
    "RECALL_TARGET",
    "bank_search",
    "index_bank",
    "indexable",
    "search_record",
    "study_k",
    "token_index",
]

LOG = logging.getLogger("cs3f.app")
AUTO_IVF_VOLUMES = 500
RECALL_TARGET = 0.98  # held-out; the floor for new studies is 0.95


def study_k(bank: ReferenceBank, scoring: ScoringSettings) -> int:
    """K for a study scored against the bank: max(1, floor(rho x B)), or ``scoring.k``."""
    return neighbour_count(len(bank.volumes) + 1, scoring.rho, scoring.k)


def indexable(bank: ReferenceBank) -> bool:
    """Whether the index can serve the bank: coarse tokens only (variant C)."""
    return not any(key.level == FINE for key in bank.keys)


def bank_search(bank: ReferenceBank, scoring: ScoringSettings) -> str:
    """The search a run with ``scoring`` makes of ``bank``: ``pairwise``, ``flat`` or ``ivf``."""
    if scoring.bank_index != "auto":
        return scoring.bank_index
    stored = len(bank.layouts) == len(bank.regions) * len(bank.keys)
    reached = all(layout.recall >= RECALL_TARGET for layout in bank.layouts.values())
    big = len(bank.volumes) >= AUTO_IVF_VOLUMES
    return "ivf" if scoring.levels == (COARSE,) and big and stored and reached else "pairwise"


def search_record(bank: ReferenceBank, scoring: ScoringSettings) -> dict:
    """What a run's scores.json says about its search of the bank: the kind and, for ``ivf``,
    each stored layout's cells, cells searched and held-out recall (none stored: trained for
    this run, its figures in run.log)."""
    kind = bank_search(bank, scoring)
    record: dict = {"search": kind, "exact": kind != "ivf"}
    if kind == "ivf":
        record["index"] = bank.index  # None: trained for this run
        record["layouts"] = [
            {"region": region, "key": list(key), "nlist": layout.nlist, "nprobe": layout.nprobe,
             "recall": round(layout.recall, 4), "k": layout.k}
            for (region, key), layout in sorted(bank.layouts.items())
        ]  # fmt: skip
    return record


def token_index(
    bank: ReferenceBank, region: str, key: TokenKey, kind: str, scoring: ScoringSettings
) -> VolumeTokenIndex:
    """The ``flat`` or ``ivf`` index of the bank's token sets of (region, key); ``ivf`` from the
    stored layout, or one trained now (seeded, for the K of ``scoring``) when there is none."""
    features = [t.features for t in bank.token_sets(region, key)]
    if kind == "flat":
        return VolumeTokenIndex.flat(features)
    layout = bank.layouts.get((region, key))
    if layout is None:
        layout = _train(features, study_k(bank, scoring))
        LOG.info("no stored index of %s %s: trained %s", region, tuple(key), layout.describe())
    return VolumeTokenIndex.ivf(features, layout)


def _train(features: Sequence[np.ndarray], k: int) -> IvfLayout:
    """A layout for K = k (at most B - 1: the held-out queries leave their own volume out)."""
    return train_ivf(features, min(k, len(features) - 1), target=RECALL_TARGET)


def index_bank(bank: ReferenceBank) -> ReferenceBank:
    """Train and store the approximate index of every region and key of a variant C bank, for
    the K of the bank's own scoring settings (a bank with fine tokens is returned as it is);
    the reopened bank."""
    if not indexable(bank):
        return bank
    k = study_k(bank, ScoringSettings(**bank.identity["scoring"]))
    layouts = {
        (region, key): _train([t.features for t in bank.token_sets(region, key)], k)
        for region in bank.regions
        for key in bank.keys
    }
    return bank.with_index(layouts, RECALL_TARGET)
