"""SMTP delivery for the email job: a small connection pool and the failure classification.

``classify_smtp_error`` is pure: it turns what aiosmtplib raised into ``Permanent`` (a
bounce: the message or its recipient is refused; retrying cannot help) or ``Retryable``
(the server or the network failed; the retry ladder and the circuit breaker handle it).

Connections are reused: ``SMTPPool`` keeps at most ``size`` of them, each carrying one
transaction at a time. An idle connection the server has since closed is detected when
it is used and replaced by a fresh one, once. If the server dropped the connection after
accepting ``DATA`` but before replying, that resend duplicates the email; it carries the
same ``Message-ID``, so the receiver can drop it (our at-least-once promise).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from dataclasses import dataclass, field, replace

import aiosmtplib

from streams.errors import ConfigError, Permanent, Retryable
from streams.jobs import signing
from streams.jobs.mail_settings import EmailSettings

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"\S+@\S+")
_MAX_REASON_CHARS = 160


@dataclass(frozen=True)
class SMTPConfig:
    """Where and how to connect; ``timeout_s`` bounds the connect and each SMTP command."""

    host: str
    port: int
    starttls: bool = False
    implicit_tls: bool = False  # TLS from the first byte (port 465)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    tls_context: ssl.SSLContext | None = None
    local_hostname: str | None = None

    @classmethod
    def from_settings(
        cls, settings: EmailSettings, *, tls_context: ssl.SSLContext | None = None
    ) -> SMTPConfig:
        """The SMTP settings, checked; ``tls_context`` overrides the CA (``smtp_ca_file``,
        else the system store) that verifies the server's certificate.

        Raises ConfigError naming the variable: credentials without STARTTLS or implicit
        TLS (they would cross the wire in clear text), both TLS modes, a placeholder
        password.
        """
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        if password is not None:
            signing.check_secret("STREAMS_SMTP_PASSWORD", password)
        if settings.smtp_starttls and settings.smtp_implicit_tls:
            raise ConfigError(
                "STREAMS_SMTP_IMPLICIT_TLS: choose STARTTLS or implicit TLS, not both"
            )
        encrypted = settings.smtp_starttls or settings.smtp_implicit_tls
        if (settings.smtp_username or password) and not encrypted:
            raise ConfigError(
                "STREAMS_SMTP_USERNAME/STREAMS_SMTP_PASSWORD: refusing to send credentials "
                "in clear text; set STREAMS_SMTP_STARTTLS=true (port 587) or "
                "STREAMS_SMTP_IMPLICIT_TLS=true (port 465)"
            )
        if tls_context is None:
            cafile = settings.smtp_ca_file
            if cafile is not None and not cafile.is_file():
                raise ConfigError(f"STREAMS_SMTP_CA_FILE: {cafile} is not a file")
            tls_context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            starttls=settings.smtp_starttls,
            implicit_tls=settings.smtp_implicit_tls,
            username=settings.smtp_username or None,
            password=password,
            timeout_s=settings.smtp_timeout_s,
            tls_context=tls_context,
        )

    @property
    def dependency(self) -> str:
        """The circuit-breaker name of this server: ``smtp:<host>:<port>``."""
        return f"smtp:{self.host}:{self.port}"

    def with_local_hostname(self, name: str | None) -> SMTPConfig:
        return replace(self, local_hostname=name)


# --- classification ---------------------------------------------------------------------


def _scrub(text: str) -> str:
    """A server reply fit for an error header: no addresses, one line, bounded."""
    text = " ".join(_ADDRESS.sub("<address>", text).split())
    return text[:_MAX_REASON_CHARS]


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {_scrub(exc.message)}".rstrip()


_SESSION_REFUSALS = (
    aiosmtplib.SMTPAuthenticationError,
    aiosmtplib.SMTPHeloError,
    aiosmtplib.SMTPConnectResponseError,
)


def _classify_response(exc: aiosmtplib.SMTPResponseException) -> Retryable | Permanent:
    if 400 <= exc.code < 500:
        return Retryable(f"smtp: temporary failure {_reply(exc)}")
    if not 500 <= exc.code < 600:
        return Retryable(f"smtp: unexpected reply {_reply(exc)}")
    if isinstance(exc, _SESSION_REFUSALS):
        # Refused before any message was named: credentials, TLS or server set-up. Every
        # email would fail the same way, so it is the dependency's failure, not a bounce.
        return Retryable(f"smtp: session refused {_reply(exc)}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code != 552:
        # MAIL FROM refused for our sender (relay denied, SPF): configuration, not this
        # message. 552 there is the SIZE check, which is about this message.
        return Retryable(f"smtp: sender refused {_reply(exc)}")
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return Permanent(f"to: bounced, recipient refused {_reply(exc)}")
    stage = "DATA" if isinstance(exc, aiosmtplib.SMTPDataError) else "MAIL"
    return Permanent(f"smtp: bounced, {stage} refused {_reply(exc)}")


def classify_smtp_error(exc: BaseException) -> Retryable | Permanent:
    """The handler outcome for an SMTP failure.

    5xx on the recipient (RCPT) or the content (DATA), or a message too large -> Permanent;
    4xx anywhere, refused connections, resets, timeouts, TLS and login failures ->
    Retryable. Messages carry the reply code and scrubbed text, never an address.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0] if exc.recipients else None
        if first is None:
            return Retryable("smtp: recipient refused without a reply")
        return _classify_response(first)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _classify_response(exc)
    if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts subclass it
        return Retryable("smtp: timed out")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return Retryable(f"smtp: server lacks a needed extension ({_scrub(exc.message)})")
    if isinstance(exc, ssl.SSLError):
        return Retryable(f"smtp: TLS failed ({type(exc).__name__})")
    if isinstance(exc, OSError):  # refused, reset, unreachable, server disconnected
        return Retryable(f"smtp: connection failed ({type(exc).__name__})")
    return Retryable(f"smtp: {type(exc).__name__}")


def is_hard_bounce(exc: BaseException) -> bool:
    """A 5xx reply to RCPT: the address does not exist (suppression list, not just DLQ)."""
    if not isinstance(exc, aiosmtplib.SMTPRecipientsRefused) or not exc.recipients:
        return False
    return 500 <= exc.recipients[0].code < 600


# --- the pool ---------------------------------------------------------------------------

_STALE = (aiosmtplib.SMTPServerDisconnected, ConnectionResetError, BrokenPipeError)


class SMTPPool:
    """At most ``size`` SMTP connections, each used by one transaction at a time."""

    def __init__(self, config: SMTPConfig, size: int = 4) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.config = config
        self.size = size
        self.connects = 0  # connections opened so far (tests, metrics)
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(size)

    async def send(self, sender: str, recipient: str, data: bytes) -> None:
        """One SMTP transaction; raises what aiosmtplib or the socket raised."""
        async with self._slots:
            client = self._take_idle()
            if client is not None:
                try:
                    await self._transact(client, sender, recipient, data)
                    return
                except _STALE:
                    log.debug("smtp: pooled connection was closed by the server; reconnecting")
            client = await self._connect()
            await self._transact(client, sender, recipient, data)

    async def close(self) -> None:
        """QUIT every idle connection (bounded by the timeout), then drop them."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await asyncio.wait_for(client.quit(), self.config.timeout_s)
            except Exception:  # closing anyway: nothing to report
                client.close()

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        cfg = self.config
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=cfg.timeout_s,
            use_tls=cfg.implicit_tls,
            # True: STARTTLS or fail; None: upgrade when offered (verified); never off
            start_tls=True if cfg.starttls else None if not cfg.implicit_tls else False,
            tls_context=cfg.tls_context,
            username=cfg.username,
            password=cfg.password,
            local_hostname=cfg.local_hostname,
        )
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        self.connects += 1
        return client

    async def _transact(
        self, client: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes
    ) -> None:
        try:
            await client.sendmail(sender, [recipient], data)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            self._release(client)  # aiosmtplib sent RSET: the connection is reusable
            raise
        except BaseException:
            client.close()
            raise
        self._release(client)

    def _release(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and len(self._idle) < self.size:
            self._idle.append(client)
        else:
            client.close()
