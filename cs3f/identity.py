"""Where two run identities differ: the encoder, its weights and every setting, as JSON-like
values (a reference bank refuses a run whose identity is not its own, naming each difference)."""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["as_json", "identity_differences"]


def identity_differences(stored: Mapping, run: Mapping) -> list[str]:
    """``"dotted.name: bank X, this run Y"`` for every field where ``stored`` and ``run`` differ,
    compared as JSON gives them back (tuples as lists)."""
    return _differences(as_json(dict(stored)), as_json(dict(run)))


def _differences(bank: object, run: object, path: str = "") -> list[str]:
    """Dotted names, with both values, where two JSON-like values differ."""
    if isinstance(bank, dict) and isinstance(run, dict):
        out = []
        for name in sorted(set(bank) | set(run)):
            where = f"{path}.{name}" if path else name
            if name not in run or name not in bank:
                out.append(f"{where}: bank {bank.get(name)!r}, this run {run.get(name)!r}")
            else:
                out.extend(_differences(bank[name], run[name], where))
        return out
    return [] if bank == run else [f"{path}: bank {bank!r}, this run {run!r}"]


def as_json(value: object) -> object:
    """``value`` as JSON would give it back (tuples become lists), so that it compares."""
    return json.loads(json.dumps(value))
