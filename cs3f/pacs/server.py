"""Our C-STORE SCP (pynetdicom): receives studies into an :class:`~cs3f.pacs.inbox.Inbox`.

It answers to our AE title only, accepts associations only from the calling AE titles of
:attr:`PacsSettings.accepted_aets` (the PACS's and the allowed ones; any other is rejected
with "calling AE title not recognised", and the refusal is logged), takes every storage SOP
class in every transfer syntax (the app decodes what it can and says why it cannot for the
rest), answers C-ECHO, and runs TLS when the settings ask for it.
"""

from __future__ import annotations

import logging
import ssl

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from cs3f.pacs import PacsError
from cs3f.pacs.config import PacsSettings
from cs3f.pacs.inbox import Inbox
from cs3f.pacs.network import new_ae

__all__ = ["StorageServer"]

LOG = logging.getLogger("cs3f.app")  # the app's log, as cs3f.screening's


def _refused(event) -> None:
    requestor = event.assoc.requestor
    LOG.warning(
        "refused an association from %s:%s calling itself %r (not in the allow-list)",
        requestor.address,
        requestor.port,
        requestor.ae_title,
    )


class StorageServer:
    """``with StorageServer(settings, port, inbox):`` our C-STORE SCP runs on ``port`` (all
    interfaces) in background threads, and stops on leaving the block.

    Raises (on entering):
        PacsError: the port cannot be listened on, or the TLS files cannot be read.
    """

    def __init__(self, settings: PacsSettings, port: int, inbox: Inbox) -> None:
        self.settings, self.port, self.inbox = settings, port, inbox
        self._server = None

    def __enter__(self) -> StorageServer:
        if not self.settings.accepted_aets:  # pynetdicom would take an empty list as "anyone"
            raise PacsError("no calling AE title is allowed: give the PACS's (called_aet)")
        ae = new_ae(self.settings)
        ae.require_called_aet = True
        ae.require_calling_aet = self.settings.accepted_aets
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [
            (evt.EVT_C_STORE, self.inbox.handle_store),
            (evt.EVT_CONN_CLOSE, self.inbox.handle_close),
            (evt.EVT_REJECTED, _refused),
        ]
        try:
            self._server = ae.start_server(
                ("", self.port),
                block=False,
                ssl_context=self.settings.server_tls(),
                evt_handlers=handlers,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise PacsError(f"cannot listen on port {self.port}: {exc}") from exc
        LOG.info(
            "listening as %s on port %d%s, accepting %s",
            self.settings.aet,
            self.port,
            " with TLS" if self.settings.tls else "",
            ", ".join(self.settings.accepted_aets) or "nobody",
        )
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
