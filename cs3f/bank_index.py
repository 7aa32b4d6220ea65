"""The files of a reference bank's approximate index: one :class:`IvfLayout` per (region, token
key) in one folder, ``BANK/index/<generation>/`` (see :mod:`cs3f.bank` for where it sits).

    index.json         {"kind": "ivf", "target": recall target, "volumes": [ids in order],
                        "sets": [{"region", "key", "stem", "nlist", "nprobe", "recall",
                                  "score_error", "k"}, ...]}
    <stem>.centroids.npy   (nlist, d) float32
    <stem>.lists.npy       (N,) int32, the cell of every token of the listed volumes, in order
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from cs3f.method.token_index import IvfLayout
from cs3f.method.tokens import TokenKey, TokenSet

__all__ = ["Layouts", "read_layouts", "write_layouts"]

INDEX = "index.json"
Layouts = Mapping[tuple[str, TokenKey], IvfLayout]
"""One :class:`IvfLayout` per (region, token key)."""
TokenSets = Callable[[str, TokenKey], list[TokenSet]]
"""``token_sets(region, key)``: the bank's token sets, one per volume, in bank order."""


def _stem(number: int, region: str, key: TokenKey) -> str:
    """The file name stem of the arrays of (region, key), the ``number``-th layout written:
    letters, digits and ``-`` (the number keeps two keys that read alike apart)."""
    named = re.sub(r"[^A-Za-z0-9]+", "-", f"{region}_a{key.axis}_{key.layer}_{key.level}")
    return f"{number:03d}-{named}"


def write_layouts(
    folder: Path,
    layouts: Layouts,
    volume_ids: list[str],
    target: float,
    token_sets: TokenSets,
) -> None:
    """Write ``layouts`` of the bank volumes ``volume_ids`` (in order) as ``folder``, whole or
    not at all: into a staging folder beside it, read back there as :func:`read_layouts` checks
    them, then renamed (an unreferenced ``folder`` that a crash left there is replaced).

    Raises:
        ValueError: a layout does not fit the tokens (nothing is left behind).
    """
    shutil.rmtree(folder, ignore_errors=True)
    staging = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    try:
        _write(staging, layouts, volume_ids, target)
        read_layouts(staging, volume_ids, token_sets)
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write(folder: Path, layouts: Layouts, volume_ids: list[str], target: float) -> None:
    """The files of :func:`write_layouts` into ``folder``."""
    entries = []
    for number, ((region, key), layout) in enumerate(sorted(layouts.items())):
        stem = _stem(number, region, key)
        np.save(folder / f"{stem}.centroids.npy", np.asarray(layout.centroids, np.float32))
        np.save(folder / f"{stem}.lists.npy", np.asarray(layout.lists, np.int32))
        entries.append(
            {
                "region": region,
                "key": list(key),
                "stem": stem,
                "nlist": layout.nlist,
                "nprobe": layout.nprobe,
                "recall": layout.recall,
                "score_error": layout.score_error,
                "k": layout.k,
            }
        )
    index = {"kind": "ivf", "target": target, "volumes": volume_ids, "sets": entries}
    (folder / INDEX).write_text(json.dumps(index, indent=1), "utf-8")


def read_layouts(
    folder: Path, volume_ids: list[str], token_sets: TokenSets
) -> dict[tuple[str, TokenKey], IvfLayout]:
    """The layouts in ``folder`` (arrays memmapped), checked to cover the bank volumes
    ``volume_ids`` (in order) and their tokens, ``token_sets(region, key)``.

    Raises:
        OSError: a file is missing or unreadable.
        ValueError: a file is cut short or mangled, or the index covers other volumes or tokens.
    """
    written = json.loads((folder / INDEX).read_text("utf-8"))
    try:
        if written["volumes"] != volume_ids:
            raise ValueError("it covers other volumes than the bank's")
        return dict(_layout(folder, entry, token_sets) for entry in written["sets"])
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{INDEX} lacks or mangles {exc}") from exc


def _layout(
    folder: Path, entry: dict, token_sets: TokenSets
) -> tuple[tuple[str, TokenKey], IvfLayout]:
    """One ``sets`` entry of ``index.json`` and its arrays, checked against the tokens."""
    region, key = entry["region"], TokenKey(*entry["key"])
    stem = folder / entry["stem"]
    centroids = np.load(stem.with_suffix(".centroids.npy"), mmap_mode="r")
    lists = np.load(stem.with_suffix(".lists.npy"), mmap_mode="r")
    sets = token_sets(region, key)
    n_tokens, d = sum(len(t.features) for t in sets), sets[0].features.shape[1]
    fits = centroids.ndim == 2 and centroids.shape[1] == d and lists.shape == (n_tokens,)
    if not fits or lists.min(initial=0) < 0 or lists.max(initial=0) >= len(centroids):
        raise ValueError(f"{stem.name} does not cover the bank's {n_tokens} tokens of d = {d}")
    layout = IvfLayout(
        centroids, lists, entry["nprobe"], entry["recall"], entry["score_error"], entry["k"]
    )
    return (region, key), layout
