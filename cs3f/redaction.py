"""Keeping identifiers out of logs and reasons.

The app names a study in its logs by a pseudonymous tag only. Libraries it calls (pydicom,
highdicom, the SDK) may put DICOM values into their warnings, e.g. highdicom quotes a
single-component PatientName. :class:`Identifiers` is a logging filter on every handler of the
run: it replaces each registered identifier (a study's names, IDs, birth date and UIDs) by
its study's label, anything shaped like a DICOM UID by ``<uid>``, and, in messages that do not
come from this program, every quoted value by ``<value>``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["IDENTIFIERS", "Identifiers"]

UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){4,}(?![\w.])")
QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
OWN_LOGGERS = "cs3f"


class Identifiers(logging.Filter):
    """The batch's identifiers, each with the label that replaces it."""

    def __init__(self) -> None:
        super().__init__()
        self._labels: dict[str, str] = {}
        self._order: list[str] = []

    def add(self, values: Iterable[object], label: str) -> None:
        """Register ``values`` (empty and one- or two-character values are ignored: they
        would replace ordinary text) to be shown as ``label``."""
        for value in values:
            text = str(value or "").strip()
            if len(text) > 2 and text not in self._labels:
                self._labels[text] = label
        self._order = sorted(self._labels, key=len, reverse=True)  # no value survives in another

    def redact(self, text: str, quoted: bool = False) -> str:
        """``text`` without registered identifiers or UIDs; ``quoted`` also hides every quoted
        value (for messages of other libraries, which may quote any DICOM value)."""
        for value in self._order:
            text = text.replace(value, self._labels[value])
        text = UID.sub("<uid>", text)
        return QUOTED.sub("<value>", text) if quoted else text

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == OWN_LOGGERS or record.name.startswith(f"{OWN_LOGGERS}.")
        record.msg, record.args = self.redact(record.getMessage(), quoted=not own), None
        return True

    def clear(self) -> None:
        self._labels.clear()
        self._order = []


IDENTIFIERS = Identifiers()
"""The run's registry: the operators that read studies add to it, the app's log handlers use it."""
