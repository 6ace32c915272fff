"""The email job: render an ``email.requested`` event (EN/FR) and deliver it over SMTP.

Rendering and sanitising live in ``mail_render`` (pure), delivery and failure
classification in ``mail_smtp``; this module ties them to the ``Job`` contract.

Outcomes: bad input (address, locale, template, missing or unsafe variable) and bounces
(5xx on RCPT or DATA) raise ``Permanent("field: reason")``; 4xx replies, refused or reset
connections, timeouts and TLS/login failures raise ``Retryable``. A suppressed recipient
(``mail_suppression``: blacklist, hard bounce, complaint, unsubscribe) raises ``Suppressed``
before anything is rendered or sent; a hard bounce (5xx on RCPT) first puts the address
on the user's suppression list.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any, ClassVar

from streams.errors import Permanent
from streams.jobs.base import JobContext, JobSpec
from streams.jobs.mail_render import (
    check_mail_settings,
    render_email,
    sender_address,
    to_wire_bytes,
    unsubscribe_token,
    unsubscribe_url,
    verify_unsubscribe_token,
)
from streams.jobs.mail_settings import EmailSettings
from streams.jobs.mail_smtp import SMTPConfig, SMTPPool, classify_smtp_error, is_hard_bounce
from streams.jobs.mail_suppression import Blacklist, check_suppressed, suppress

__all__ = [
    "JOB",
    "EmailJob",
    "EmailSettings",
    "SMTPConfig",
    "classify_smtp_error",
    "render_email",
    "unsubscribe_token",
    "unsubscribe_url",
    "verify_unsubscribe_token",
]

log = logging.getLogger(__name__)


def _ehlo_name() -> str | None:
    name = socket.getfqdn()
    if not name or not name.isascii() or any(c.isspace() or ord(c) < 33 for c in name):
        return None
    return name


class EmailJob:
    """Handles ``email.requested``: one SMTP transaction per event over a pooled connection.

    ``pool_size`` caps the concurrent SMTP connections (and transactions) of this worker.
    ``tls_context`` verifies the server's STARTTLS certificate (default: system CAs).
    Raises ConfigError at construction when an email setting is invalid.
    """

    event_types: ClassVar[tuple[str, ...]] = ("email.requested",)

    def __init__(
        self,
        settings: EmailSettings,
        *,
        pool_size: int = 4,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        check_mail_settings(settings)
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.settings = settings
        self.config = SMTPConfig.from_settings(settings, tls_context=tls_context)
        self.pool_size = pool_size
        self._sender = sender_address(settings.email_from).addr_spec
        self._pool: SMTPPool | None = None
        self.blacklist = Blacklist.parse(settings.email_blacklist)

    @property
    def pool(self) -> SMTPPool | None:
        """The connection pool once started (or after the first ``handle``)."""
        return self._pool

    async def start(self) -> None:
        """Create the connection pool (connections open lazily, on first use)."""
        if self._pool is not None:
            return
        ehlo = await asyncio.to_thread(_ehlo_name)
        if self._pool is None:  # re-checked: concurrent first calls share one pool
            self._pool = SMTPPool(self.config.with_local_hostname(ehlo), self.pool_size)

    async def stop(self) -> None:
        """Close the pooled connections (QUIT, bounded by ``smtp_timeout_s``)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def handle(self, event: Any, ctx: JobContext) -> None:
        """Render and send ``event``; raises Permanent or Retryable (see the module doc).

        Only dependency failures happen inside ``ctx.dependency(...)``: a bounce is caught
        there and raised after the guard has exited normally, because a refused recipient
        or content says nothing about the server's health and must not open the breaker
        (a run of bad addresses would otherwise defer every other email).
        """
        event_id = ctx.event_id or str(getattr(event, "event_id", ""))
        table = ctx.tables.get(ctx.family)
        check_suppressed(table, self.blacklist, event.user_id, event.to, event.template)
        msg = render_email(event, self.settings, event_id)
        data = to_wire_bytes(msg)
        if self._pool is None:
            await self.start()
        pool = self._pool
        assert pool is not None

        bounce: Permanent | None = None
        cause: BaseException | None = None
        ctx.cancel.raise_if_set()  # cancelled while connecting: send nothing (never mid-send)
        async with ctx.dependency(self.config.dependency):
            try:
                await pool.send(self._sender, msg["To"].addresses[0].addr_spec, data)
            except Exception as exc:
                outcome = classify_smtp_error(exc)
                if not isinstance(outcome, Permanent):
                    raise outcome from exc
                bounce, cause = outcome, exc
        if bounce is not None:
            log.info("email %s bounced: %s", event_id, bounce)
            if cause is not None and is_hard_bounce(cause):
                await suppress(table, ctx.partition, event.user_id, event.to, "hard_bounce")
            raise bounce from cause
        log.info(
            "email %s sent (template=%s locale=%s, %d bytes)",
            event_id,
            getattr(event, "template", "?"),
            msg["Content-Language"],
            len(data),
        )


JOB = JobSpec(
    family="email", job_type=EmailJob, settings_type=EmailSettings, dependencies=("smtp",)
)
