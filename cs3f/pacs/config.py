"""Where the PACS is, who we are, what to ask for, and how to secure the link.

:class:`PacsSettings` is the ``pacs`` section of the app's settings (YAML ``pacs:`` or
``--set pacs.field=value``; the commands' flags fill the same fields). TLS uses Python's
:mod:`ssl` through pynetdicom's ``tls_args`` (as a client) and ``ssl_context`` (as a server).
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from dataclasses import dataclass

from cs3f.screening import MIN_STUDIES

__all__ = ["PacsSettings", "check_ae_title", "parse_address"]

_DATE_RANGE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


def check_ae_title(title: str, what: str) -> None:
    """Refuse what DICOM does not allow as an AE title: empty, over 16 characters, a backslash
    or a control character (PS3.5 6.2, VR AE)."""
    if not title.strip() or len(title) > 16 or "\\" in title or any(ord(c) < 32 for c in title):
        raise ValueError(f"{what} must be 1-16 characters without '\\' or controls, got {title!r}")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT`` too) -> (host, port).

    Raises:
        ValueError: no port, or one outside 1-65535.
    """
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port in 1-65535, got {text!r}")
    return host, int(port)


def _check_dates(text: str) -> None:
    """Refuse a StudyDate range that is not ``YYYYMMDD-YYYYMMDD`` of real dates (an end may be
    left open; one date alone is a range of one day)."""
    found = _DATE_RANGE.match(text)
    if not found or text == "-":
        raise ValueError(f"study_date must be YYYYMMDD-YYYYMMDD, got {text!r}")
    for date in (found.group(1), found.group(3)):
        if date:
            try:
                dt.datetime.strptime(date, "%Y%m%d")
            except ValueError:
                raise ValueError(f"study_date: {date} is not a date") from None


def _check_port(value: int, what: str, zero: bool = False) -> None:
    if not (0 if zero else 1) <= value <= 65535:
        raise ValueError(f"{what} must be in {0 if zero else 1}-65535, got {value}")


@dataclass(frozen=True)
class PacsSettings:
    """The PACS, this program's DICOM identity, the query and the listener's rules.

    Attributes:
        host: the PACS's host name or address ("" until given).
        port: its DICOM port.
        called_aet: its AE title ("" until given).
        aet: this program's AE title: the calling AE title of its requests, the one its
            C-STORE SCP answers to (and the C-MOVE destination the PACS must know).
        listen_port: the port ``python -m app listen`` accepts C-STORE on.
        bind: the address our C-STORE SCP (the listener, and ``pacs`` with ``move_port``)
            listens on: ``127.0.0.1`` (the default) accepts connections from this machine only;
            ``0.0.0.0`` (or one interface's address) from the network, where a PACS on another
            host needs it.
        move_port: ``python -m app pacs`` retrieves by C-MOVE to its own C-STORE SCP on this
            port; 0 = by C-GET (no inbound port needed).
        allowed_aets: calling AE titles our C-STORE SCP accepts besides ``called_aet`` (which
            is always accepted); any other is rejected.
        modality: the study-level query's ModalitiesInStudy, and the Modality of the series
            retrieved, or kept by the listener ("MR" for brain MRI; "CT" for lung CT).
        study_date: StudyDate range ``YYYYMMDD-YYYYMMDD`` (either end may be left open) or one
            date; "" = any.
        study_description: StudyDescription pattern (DICOM wildcards ``*`` and ``?``); "" = any.
        body_part: BodyPartExamined pattern of the series to retrieve, or for the listener to
            keep; "" = any.
        quiet_s: the listener deems a study complete after this many seconds without a new
            instance of it (and no association still sending it).
        batch_studies: the listener without a reference bank screens complete studies together
            once at least this many are complete (at least
            :data:`~cs3f.screening.MIN_STUDIES`: a batch compares studies with each other).
        timeout_s: seconds the network, association and DIMSE exchanges we start may stay
            silent.
        scp_timeout_s: seconds an association with our C-STORE SCP may stay silent before we
            close it (its study is then held until sent again: senders must release).
        retry_s: the listener tries again to send results the PACS did not take every this
            many seconds.
        tls: secure every association with TLS (ours as a client and as a server).
        tls_cert, tls_key: this program's certificate chain and private key (PEM files): needed
            to listen with TLS, and sent to a PACS that asks for a client certificate.
        tls_ca: PEM file of the certificates a peer's must chain to (as a client: the PACS's;
            as a server: given, clients must present a certificate that chains to it); "" = the
            system's trusted certificates, and no client certificate asked for.
    """

    host: str = ""
    port: int = 104
    called_aet: str = ""
    aet: str = "CS3F"
    listen_port: int = 11112
    bind: str = "127.0.0.1"
    move_port: int = 0
    allowed_aets: tuple[str, ...] = ()
    modality: str = "MR"
    study_date: str = ""
    study_description: str = ""
    body_part: str = ""
    quiet_s: float = 10.0
    batch_studies: int = 2
    timeout_s: float = 30.0
    scp_timeout_s: float = 600.0
    retry_s: float = 60.0
    tls: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""

    def __post_init__(self) -> None:
        check_ae_title(self.aet, "aet")
        if self.called_aet:
            check_ae_title(self.called_aet, "called_aet")
        for title in self.allowed_aets:
            check_ae_title(title, "allowed_aets")
        _check_port(self.port, "port")
        _check_port(self.listen_port, "listen_port")
        _check_port(self.move_port, "move_port", zero=True)
        _check_dates(self.study_date)
        for name in ("quiet_s", "timeout_s", "scp_timeout_s", "retry_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 (seconds), got {getattr(self, name)}")
        if self.batch_studies < MIN_STUDIES:
            raise ValueError(f"batch_studies must be >= {MIN_STUDIES}, got {self.batch_studies}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give tls_cert and tls_key together")

    @property
    def series(self) -> dict[str, str]:
        """What chooses the series a job screens from, besides the selection rules: the
        modality and the body part pattern (see :meth:`wants`)."""
        return {"modality": self.modality, "body_part": self.body_part}

    def wants(self, modality: str, body_part: str) -> bool:
        """Whether a series of ``modality`` and ``body_part`` (BodyPartExamined) is one the
        jobs screen from: of :attr:`modality`, and matching :attr:`body_part` (DICOM
        wildcards ``*`` and ``?``, case-sensitive; "" = any) when given."""
        if modality != self.modality:
            return False
        pattern = "".join(
            ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in self.body_part
        )
        return not self.body_part or re.fullmatch(pattern, body_part, re.DOTALL) is not None

    @property
    def peer(self) -> str:
        """The PACS as the logs name it: ``AET@host:port``."""
        return f"{self.called_aet}@{self.host}:{self.port}"

    @property
    def accepted_aets(self) -> list[str]:
        """The calling AE titles our C-STORE SCP accepts: the PACS's and the allowed ones."""
        return sorted({self.called_aet, *self.allowed_aets} - {""})

    def client_tls(self) -> tuple[ssl.SSLContext, str] | None:
        """pynetdicom's ``tls_args`` for associations we request: the PACS's certificate is
        verified (against ``tls_ca`` or the system's) for ``host``; ours is sent if given.
        ``None`` without TLS.

        Raises:
            OSError, ssl.SSLError: a certificate or key file cannot be read.
        """
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca or None)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context, self.host

    def server_tls(self) -> ssl.SSLContext | None:
        """pynetdicom's ``ssl_context`` for our C-STORE SCP: our certificate, and with
        ``tls_ca`` a client certificate required that chains to it. ``None`` without TLS.

        Raises:
            ValueError: TLS asked for without our certificate and key.
            OSError, ssl.SSLError: a certificate or key file cannot be read.
        """
        if not self.tls:
            return None
        if not self.tls_cert:
            raise ValueError("listening with TLS needs tls_cert and tls_key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.tls_ca or None)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        context.verify_mode = ssl.CERT_REQUIRED if self.tls_ca else ssl.CERT_NONE
        return context
