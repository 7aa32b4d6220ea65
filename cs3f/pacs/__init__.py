"""DICOM networking with a PACS, through pynetdicom (no hand-written networking).

- ``config``: :class:`~cs3f.pacs.config.PacsSettings` (hosts, ports, AE titles, the query, the
  listener's timing, TLS) and the TLS contexts.
- ``network``: opening an association with the PACS, with a clear error when it cannot be
  reached or refuses; C-FIND at study, series and instance level.
- ``retrieve``: a study's series into a folder, by C-GET or by C-MOVE to our own C-STORE SCP.
- ``send``: a study's result objects to the PACS (C-STORE), skipping those already there.
- ``inbox``: instances received by our C-STORE SCP, grouped per study, and when a study is
  complete; ``server``: that SCP, with its calling-AE-title allow-list.

Like the rest of :mod:`cs3f` it never imports the MONAI Deploy SDK. Nothing here logs a
patient's name or ID, or asks the PACS for one: studies are named by their pseudonymous tag
(:func:`cs3f.io.outputs.pseudonym`), files by :func:`cs3f.io.outputs.study_keys`. The DICOM
files received (which hold them) are kept only in the inbox, until screened or discarded.
"""

__all__ = ["NothingToRetrieve", "PacsError", "PacsUnavailable"]


class PacsError(RuntimeError):
    """A DICOM exchange failed (the message says which and why)."""


class PacsUnavailable(PacsError):
    """The PACS could not be reached, or it refused the association: nothing was exchanged."""


class NothingToRetrieve(PacsError):
    """The study has no series of images the query asks for: nothing to screen, which is not a
    failure (the message says what it has)."""
