"""The webhook job: a signed HTTP POST of ``webhook.requested`` events.

Request: the event's ``body`` (UTF-8 bytes, unchanged) POSTed to its ``url`` with
``Content-Type``, ``User-Agent: streams-webhook/<version>``, ``Idempotency-Key`` and
``X-Streams-Event-Id`` (the event id, the same on every attempt so the receiver can drop
duplicates), ``X-Streams-Event-Name``, ``X-Streams-Subscription-Id``,
``X-Streams-Timestamp`` and ``X-Streams-Signature`` (scheme ``v2`` in ``signing.py``: event
id, URL, event name, timestamp and body are signed with the subscription's secret, both
secrets while it rotates).

Outcomes (``outcome_for``): 2xx done; 408, 429, 5xx, timeouts and connection errors are
``Retryable`` (``RetryAfter`` when the answer carries a ``Retry-After`` header, delta
seconds or HTTP date, capped at ``max_retry_after_s``); a 3xx is ``Permanent`` (redirects
are not followed: they would bypass the SSRF guard); other 4xx are ``Permanent`` with the
status and a bounded, scrubbed snippet of the answer. Bad event fields are
``Permanent("<field>: <reason>")``. Messages name the host (and port), never the path or
query (webhook URLs often carry tokens in them); a transport failure is reported by its
error type only, as aiohttp's messages quote the URL.

SSRF guard (``ssrf.py``): the URL is parsed and its host resolved once; every address
must be public or allow-listed. The connection is then pinned to the vetted addresses: the
session's resolver answers only from them (a context variable set around the request),
so a rebinding DNS server cannot swap in another address for the connect. No proxy from
the environment is used (``trust_env=False``) and no cookies are kept.

Circuit breaker: the HTTP exchange runs inside ``ctx.dependency("webhook:<host>")``. Only
failures of the endpoint propagate through that guard (5xx, 408, 429, timeouts,
connection errors), so they count against the breaker; a 4xx or 3xx is a healthy endpoint
refusing this request, so its ``Permanent`` is raised after the guard exits normally.
URL and address refusals and DNS failures happen before the guard and never touch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import importlib.metadata
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, ClassVar

import aiohttp
from pydantic import Field, SecretStr

from streams.core.headers import truncate_utf8
from streams.core.scrub import scrub
from streams.errors import ConfigError, HandlerError, Permanent, Retryable, RetryAfter
from streams.jobs import signing
from streams.jobs.base import JobContext, JobSettings, JobSpec
from streams.jobs.ssrf import AllowList, Resolver, Target, parse_target
from streams.jobs.ssrf import resolve_and_vet as _resolve_and_vet
from streams.jobs.webhook_pin import PIN, Pin, PinnedResolver

if TYPE_CHECKING:
    from streams.events import WebhookRequested

EVENT_TYPE = "webhook.requested"
MAX_RETRY_AFTER_S = 3600.0
MAX_SNIPPET_BYTES = 200
MAX_READ_BYTES = 64 * 1024
CONNECTOR_LIMIT = 100  # connections in flight over all endpoints
CONNECTOR_LIMIT_PER_HOST = 32  # one slow endpoint cannot take the whole pool


def _version() -> str:
    try:
        return importlib.metadata.version("streams")
    except importlib.metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"streams-webhook/{_version()}"


class WebhookSettings(JobSettings):
    """Signing secrets, timeout and SSRF allow-list of the webhook job.

    Secrets: ``webhook_subscription_secrets`` (JSON ``{"sub-1": ["current", "previous"]}``)
    per subscription id, else ``webhook_signing_secret`` (plus ``..._previous`` while it
    rotates). Empty values and placeholders are refused; with none configured the job
    refuses to start, unless ``STREAMS_DEV_MODE`` is on (a random secret per run).
    """

    dev_mode: bool = Field(default=False, description="generate missing secrets (make run)")
    webhook_signing_secret: SecretStr | None = None
    webhook_signing_secret_previous: SecretStr | None = None
    webhook_subscription_secrets: dict[str, list[SecretStr]] = Field(default_factory=dict)
    webhook_timeout_s: float = 10.0
    webhook_allow_hosts: str = Field(
        default="", description="comma list of hosts/CIDRs allowed despite being private"
    )


def signing_keys(settings: WebhookSettings) -> signing.StaticSigningKeys:
    """The configured secrets, checked; ConfigError names a refused variable."""
    default = [
        signing.check_secret(variable, secret.get_secret_value())
        for variable, secret in (
            ("STREAMS_WEBHOOK_SIGNING_SECRET", settings.webhook_signing_secret),
            ("STREAMS_WEBHOOK_SIGNING_SECRET_PREVIOUS", settings.webhook_signing_secret_previous),
        )
        if secret is not None
    ]
    per_subscription: dict[str, tuple[str, ...]] = {}
    for sub, secrets_ in settings.webhook_subscription_secrets.items():
        variable = f"STREAMS_WEBHOOK_SUBSCRIPTION_SECRETS[{sub}]"
        if not 1 <= len(secrets_) <= signing.MAX_SECRETS:
            raise ConfigError(f"{variable}: give 1 or {signing.MAX_SECRETS} secrets")
        checked = [signing.check_secret(variable, s.get_secret_value()) for s in secrets_]
        per_subscription[sub] = tuple(checked)
    if not default and not per_subscription:
        if not settings.dev_mode:
            raise ConfigError(
                "STREAMS_WEBHOOK_SIGNING_SECRET: not set (nor STREAMS_WEBHOOK_SUBSCRIPTION_"
                "SECRETS); set a random secret, or STREAMS_DEV_MODE=true for a per-run one"
            )
        default = [secrets.token_urlsafe(32)]
    return signing.StaticSigningKeys(tuple(default), per_subscription)


async def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the OS resolver (``getaddrinfo``), in its order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# --- the outcome of one answer (pure) ------------------------------------------------------


def parse_retry_after(value: str | None, now_s: float, max_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP date).

    Clamped to ``[0, max_s]``; None when absent or malformed (a negative delta is
    malformed).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        delay_s = float(int(text))
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay_s = when.timestamp() - now_s
    return min(max(0.0, delay_s), max_s)


def snippet_of(body: bytes, max_bytes: int = MAX_SNIPPET_BYTES) -> str:
    """A one-line, scrubbed, bounded excerpt of an answer body for an error message."""
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return truncate_utf8(scrub(text), max_bytes)


@dataclass(frozen=True)
class Answer:
    """What the endpoint answered (only what ``outcome_for`` needs)."""

    status: int
    retry_after: str | None = None
    location: str | None = None
    body: bytes = b""


def outcome_for(
    answer: Answer, *, host: str, now_s: float, max_retry_after_s: float = MAX_RETRY_AFTER_S
) -> HandlerError | None:
    """The error to raise for an answer, or None when it is a success (2xx)."""
    status = answer.status
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        location = snippet_of((answer.location or "(none)").encode())
        return Permanent(f"HTTP {status} from {host}: redirect to {location} not followed")
    if status in (408, 429) or 500 <= status < 600:
        delay_s = parse_retry_after(answer.retry_after, now_s, max_retry_after_s)
        if delay_s is None:
            return Retryable(f"HTTP {status} from {host}")
        return RetryAfter(delay_s, f"HTTP {status} from {host}; retry after {delay_s:g}s")
    if 400 <= status < 500:
        detail = snippet_of(answer.body)
        return Permanent(f"HTTP {status} from {host}: {detail or '(empty body)'}")
    return Retryable(f"unexpected HTTP {status} from {host}")


# --- the request -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """The request to send, built (and checked) from the event."""

    target: Target
    body: bytes
    headers: Mapping[str, str]


def _header_value(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Permanent(f"{field}: must be a non-empty string")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise Permanent(f"{field}: must not contain control characters")
    if not value.isascii() and field != "event_name":
        raise Permanent(f"{field}: must be ASCII")
    return value


def build_request(
    event: WebhookRequested,
    *,
    secrets: Sequence[str],
    timestamp_s: int,
    user_agent: str = USER_AGENT,
) -> Outgoing:
    """The request for ``event`` signed with ``secrets`` (one, or two while rotating);
    Permanent("<field>: <reason>") on bad fields or when there is no secret."""
    target = parse_target(event.url)
    event_id = _header_value("event_id", event.envelope.event_id)
    event_name = _header_value("event_name", event.event_name)
    subscription_id = _header_value("subscription_id", event.subscription_id)
    if not secrets:
        raise Permanent("subscription_id: no signing secret configured for this subscription")
    content_type = _header_value("content_type", event.content_type)
    if not isinstance(event.body, str):
        raise Permanent("body: must be a string")
    try:
        body = event.body.encode("utf-8")
    except UnicodeEncodeError:
        raise Permanent("body: not encodable as UTF-8") from None
    headers = {
        "Content-Type": content_type,
        "User-Agent": user_agent,
        "Idempotency-Key": event_id,
        "X-Streams-Event-Id": event_id,
        "X-Streams-Event-Name": event_name,  # sent as UTF-8 bytes (aiohttp's encoding)
        signing.SUBSCRIPTION_HEADER: subscription_id,
        **signing.sign_headers(
            secrets,
            event_id=event_id,
            url=str(target.url),
            event_name=event_name,
            timestamp_s=timestamp_s,
            body=body,
        ),
    }
    return Outgoing(target=target, body=body, headers=headers)


# --- the job -----------------------------------------------------------------------------


class WebhookJob:
    """Delivers ``webhook.requested`` events (see the module docstring for the contract).

    ``resolve`` (host, port) -> addresses is injected for tests (default: getaddrinfo);
    ``clock`` gives unix seconds (timestamps, Retry-After dates); ``keys`` finds a
    subscription's secrets (default: from the settings). Raises ConfigError when a secret
    is missing or a placeholder.
    """

    event_types: ClassVar[tuple[str, ...]] = (EVENT_TYPE,)

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        resolve: Resolver = system_resolve,
        clock: Callable[[], float] = time.time,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        connect_timeout_s: float | None = None,
        keys: signing.SigningKeys | None = None,
    ) -> None:
        self._keys = keys if keys is not None else signing_keys(settings)
        self._allow = AllowList.parse(settings.webhook_allow_hosts)
        self._timeout_s = settings.webhook_timeout_s
        self._timeout = aiohttp.ClientTimeout(
            total=settings.webhook_timeout_s,
            connect=connect_timeout_s or settings.webhook_timeout_s,
        )
        self._resolve = resolve
        self._clock = clock
        self._max_retry_after_s = max_retry_after_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the shared session (one connection pool for every endpoint)."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=CONNECTOR_LIMIT,
            limit_per_host=CONNECTOR_LIMIT_PER_HOST,
            resolver=PinnedResolver(),
            use_dns_cache=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            raise_for_status=False,
        )

    async def stop(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def handle(self, event: WebhookRequested, ctx: JobContext) -> None:
        """Deliver one event. Raises Retryable / RetryAfter / Permanent (see module doc)."""
        session = self._session
        if session is None:
            raise RuntimeError("WebhookJob.handle() called before start()")
        outgoing = build_request(
            event,
            secrets=self._keys.secrets_for(event.subscription_id),
            timestamp_s=int(self._clock()),
        )
        target = outgoing.target
        addresses = await _resolve_and_vet(target, self._resolve, self._allow)
        permanent: HandlerError | None = None
        async with ctx.dependency(f"webhook:{target.host}"):
            # a cancel (DELETE /v1/events/{id}) aborts the exchange: raises Cancelled
            answer = await ctx.cancel.race(self._post(session, outgoing, addresses))
            outcome = outcome_for(
                answer,
                host=target.host,
                now_s=self._clock(),
                max_retry_after_s=self._max_retry_after_s,
            )
            if outcome is not None and outcome.retriable:
                raise outcome  # the endpoint failed: counts against its breaker
            permanent = outcome
        if permanent is not None:
            raise permanent  # the endpoint answered: the breaker saw a success

    async def _post(
        self, session: aiohttp.ClientSession, outgoing: Outgoing, addresses: Sequence[str]
    ) -> Answer:
        target = outgoing.target
        token = PIN.set(Pin(target.host, target.port, tuple(addresses)))
        try:
            async with session.post(
                target.url,
                data=outgoing.body,
                headers=dict(outgoing.headers),
                allow_redirects=False,
            ) as response:
                # The status is the answer: a body that stalls or breaks cannot turn a
                # delivered 2xx into a retry (a duplicate) or hide a 4xx.
                body = b""
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    body = await _read_capped(response, MAX_READ_BYTES)
                return Answer(
                    status=response.status,
                    retry_after=response.headers.get("Retry-After"),
                    location=response.headers.get("Location"),
                    body=body,
                )
        except TimeoutError:
            raise Retryable(f"timeout after {self._timeout_s:g}s from {endpoint(target)}") from None
        except aiohttp.ClientError as exc:
            # the type only: aiohttp's messages quote the URL, path and query included
            kind = type(exc).__name__
            raise Retryable(f"connection to {endpoint(target)} failed: {kind}") from None
        finally:
            PIN.reset(token)


def endpoint(target: Target) -> str:
    """``host:port`` of a target, for messages (``[v6]:port`` for IPv6 literals)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Up to ``max_bytes`` of the body; the rest is dropped (the connection then closes)."""
    chunks: list[bytes] = []
    size = 0
    while size < max_bytes:
        chunk = await response.content.read(max_bytes - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


JOB = JobSpec(
    family="webhook", job_type=WebhookJob, settings_type=WebhookSettings, dependencies=("webhook",)
)
