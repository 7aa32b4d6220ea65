"""Our C-STORE SCP (pynetdicom): receives studies into an :class:`~cs3f.pacs.inbox.Inbox`.

It listens on :attr:`PacsSettings.bind` (loopback by default), answers to our AE title only,
accepts associations only from the calling AE titles of :attr:`PacsSettings.accepted_aets` (the
PACS's and the allowed ones; any other is rejected, and every refusal is logged with the reason
it was given), takes the storage SOP classes it is given (by default every one, in every
transfer syntax: the app decodes what it can and says why it cannot for the rest), answers
C-ECHO, and runs TLS when the settings ask for it. An AE title is not authentication (any peer
can claim one): only TLS with client certificates (``tls_ca``) authenticates senders.

An association that stays silent for :attr:`PacsSettings.scp_timeout_s` is closed by us; its
studies are then held (:mod:`cs3f.pacs.inbox`), so senders must release their associations.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from cs3f.pacs import PacsError
from cs3f.pacs.config import PacsSettings
from cs3f.pacs.inbox import Inbox
from cs3f.pacs.network import new_ae

__all__ = ["StorageServer"]

LOG = logging.getLogger("cs3f.app")  # the app's log, as cs3f.screening's
ALL_STORAGE = tuple(cx.abstract_syntax for cx in AllStoragePresentationContexts)


def _refused(event) -> None:
    """pynetdicom's EVT_REJECTED handler: logs who was refused and the reason given."""
    requestor, answer = event.assoc.requestor, event.assoc.acceptor.primitive
    LOG.warning(
        "refused an association from %s:%s calling itself %r and us %r: %s",
        requestor.address,
        requestor.port,
        requestor.ae_title,
        requestor.primitive.called_ae_title,
        answer.reason_str,
    )


class StorageServer:
    """``with StorageServer(settings, port, inbox):`` our C-STORE SCP runs on ``port`` of
    ``settings.bind`` in background threads, and stops on leaving the block.

    Args:
        classes: the storage SOP class UIDs accepted, in ``syntaxes`` (transfer syntax UIDs).

    Raises (on entering):
        PacsError: the port cannot be listened on, or the TLS files cannot be read.
    """

    def __init__(
        self,
        settings: PacsSettings,
        port: int,
        inbox: Inbox,
        classes: Sequence[str] = ALL_STORAGE,
        syntaxes: Sequence[str] = ALL_TRANSFER_SYNTAXES,
    ) -> None:
        self.settings, self.port, self.inbox = settings, port, inbox
        self.classes, self.syntaxes = list(classes), list(syntaxes)
        self._server = None

    def __enter__(self) -> StorageServer:
        if not self.settings.accepted_aets:  # pynetdicom would take an empty list as "anyone"
            raise PacsError("no calling AE title is allowed: give the PACS's (called_aet)")
        ae = new_ae(self.settings)
        ae.network_timeout = self.settings.scp_timeout_s
        ae.require_called_aet = True
        ae.require_calling_aet = self.settings.accepted_aets
        for sop_class in self.classes:
            ae.add_supported_context(sop_class, self.syntaxes)
        ae.add_supported_context(Verification)
        handlers = [
            (evt.EVT_C_STORE, self.inbox.handle_store),
            (evt.EVT_RELEASED, self.inbox.handle_released),
            (evt.EVT_ABORTED, self.inbox.handle_aborted),
            (evt.EVT_CONN_CLOSE, self.inbox.handle_close),
            (evt.EVT_REJECTED, _refused),
        ]
        try:
            self._server = ae.start_server(
                (self.settings.bind, self.port),
                block=False,
                ssl_context=self.settings.server_tls(),
                evt_handlers=handlers,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise PacsError(f"cannot listen on {self.settings.bind}:{self.port}: {exc}") from exc
        LOG.info(
            "listening as %s on %s:%d%s, accepting %s",
            self.settings.aet,
            self.settings.bind or "every interface",
            self.port,
            " with TLS" if self.settings.tls else "",
            ", ".join(self.settings.accepted_aets),
        )
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
