"""The push job: ``push.requested`` through a OneSignal-style provider HTTP API.

Per event, in order:

1. **consent** — the user's record in the consent table (``consent`` family, co-partitioned
   with push, written by ``jobs/consent.py``): opted out -> ``Suppressed``; a promotional
   push without consent (or with no record) -> ``Suppressed``; transactional pushes need
   no consent. Acked with outcome ``suppressed``, nothing sent.
2. **quiet hours** (``STREAMS_PUSH_QUIET_HOURS``, local time in the event's ``timezone``):
   inside the window the event is ``Deferred`` (kind ``quiet_hours``, no attempt used) to
   the window's end, keeping the rate-limit token it was charged (``reserved``: not charged
   again when it comes back).
3. **personalisation** — ``${name}`` placeholders of title and body from ``variables``
   (a missing one is ``Permanent`` naming it); **targeting** — the event's devices
   (``include_subscription_ids``) and platform (``isIos``/``isAndroid``).
4. **delivery** — ``POST <base>/notifications`` with ``Authorization: Key ...`` and
   the event id as ``idempotency_key``. 2xx ok; 408/429/5xx and connection errors retry
   (429 honours ``Retry-After``); other 4xx are permanent. Devices the provider reports
   invalid or expired each emit ``push.token_invalid`` (its ``device_id`` encrypted by the
   SDK); when every device is invalid the event is ``Permanent`` (not retried).

The 20 pushes/hour/user limit is the family's rate limit in topics.yaml (the worker's rate
gate). Device tokens are sensitive fields (encrypted on the wire, ``streams.crypto``) and
never appear in logs, failure headers or metric labels: messages name counts, not tokens.

Why aiohttp and not ``onesignal-python-api``: read in its 5.18.0 wheel, the client is
generated (OpenAPI) over urllib3 and synchronous — its ``async_req=True`` runs each call on
a ``multiprocessing.pool.ThreadPool`` (``api_client.py``) — so every push would block the
worker's event loop or hold a thread (32 in flight per worker here), and our circuit
breakers and handler timeouts (asyncio) could not cancel a hung call. It does take a base
URL (``Configuration(host=...)``) and posts the same body to the same path
(``/notifications``, ``Authorization: Key ...``), which is what this job and the test
provider speak, so switching to it later changes only the transport.
"""

from __future__ import annotations

import asyncio
import json
import logging
import string
import uuid
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, SecretStr

from streams.core.quiet_hours import QuietHours, quiet_wait_ms
from streams.errors import ConfigError, Deferred, Permanent, Retryable, RetryAfter, Suppressed
from streams.events import now_ms
from streams.jobs.base import JobContext, JobSettings, JobSpec, JobTable
from streams.jobs.consent import ConsentState, consent_key

log = logging.getLogger(__name__)

CONSENT_FAMILY = "consent"
NOTIFICATIONS_PATH = "/notifications"  # as the official client (api.onesignal.com)


class PushSettings(JobSettings):
    push_api_url: str = Field(default="http://127.0.0.1:8098", description="provider base URL")
    push_app_id: str = "streams"
    push_api_key: SecretStr = SecretStr("")
    push_quiet_hours: str = Field(default="22:00-08:00", description="local HH:MM-HH:MM")
    push_timeout_s: float = Field(default=10.0, gt=0)
    push_connections: int = Field(default=32, ge=1)


def personalise(template: str, variables: dict[str, str], where: str) -> str:
    """``${name}`` replaced from ``variables``; Permanent names a missing variable."""
    try:
        return string.Template(template).substitute(variables)
    except KeyError as exc:
        raise Permanent(f"{where}: variable {exc.args[0]!r} is not in variables") from None
    except ValueError as exc:
        raise Permanent(f"{where}: bad placeholder: {exc}") from None


def token_invalid_id(event_id: str, index: int) -> str:
    """A stable event id for the ``push.token_invalid`` of device ``index`` of an event."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"streams:push:{event_id}:invalid:{index}"))


def check_consent(table: JobTable | None, event: Any) -> None:
    """Raises Suppressed when the user opted out, or a promotional push lacks consent."""
    state = ConsentState.decode(table.get(consent_key(event.user_id)) if table else None)
    if state.opted_out:
        raise Suppressed("push: the user opted out of push notifications")
    if event.category == "promotional" and not state.promotional:
        raise Suppressed("push: promotional push without the user's consent")


def classify_reply(status: int, retry_after: str | None) -> Exception | None:
    """None for 2xx; RetryAfter, Retryable or Permanent otherwise (no body: it may echo
    device tokens)."""
    if 200 <= status < 300:
        return None
    if status == 429:
        try:
            return RetryAfter(max(0.0, float(retry_after or "")), "push provider: 429")
        except ValueError:
            return Retryable("push provider answered 429")
    if status == 408 or status >= 500:
        return Retryable(f"push provider answered {status}")
    return Permanent(f"push provider refused the notification: HTTP {status}")


def invalid_devices(reply: Any, devices: list[str]) -> list[str]:
    """The devices the provider's answer reports invalid (all of them on 'All included ...')."""
    if not isinstance(reply, dict):
        return []
    errors = reply.get("errors")
    if isinstance(errors, dict):
        bad = errors.get("invalid_player_ids") or errors.get("invalid_subscription_ids") or []
        return [d for d in devices if d in set(bad)]
    if isinstance(errors, list) and not reply.get("id"):
        return list(devices)
    return []


class PushJob:
    """Handles ``push.requested`` (see the module docstring); ``push.token_invalid`` events
    land on the push topic too and are acked here (the app consumes them)."""

    event_types: ClassVar[tuple[str, ...]] = ("push.requested", "push.token_invalid")

    def __init__(self, settings: PushSettings, *, publisher: Any = None) -> None:
        try:
            self.quiet = QuietHours.parse(settings.push_quiet_hours)
        except ValueError as exc:
            raise ConfigError(f"STREAMS_PUSH_QUIET_HOURS: {exc}") from None
        parts = urlsplit(settings.push_api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"STREAMS_PUSH_API_URL: not an http(s) URL: {settings.push_api_url!r}"
            )
        self.settings = settings
        self.url = settings.push_api_url.rstrip("/") + NOTIFICATIONS_PATH
        self.dependency = f"push:{parts.hostname}:{parts.port or 443}"
        self._session: aiohttp.ClientSession | None = None
        self._publisher = publisher
        self._owns_publisher = publisher is None
        self.clock_ms = now_ms
        self._warned = False

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.push_timeout_s),
                connector=aiohttp.TCPConnector(limit=self.settings.push_connections),
            )
        if self._publisher is None:
            from streams.publish.publisher import Publisher

            self._publisher = await asyncio.to_thread(Publisher, producer_name="push-job")

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        publisher = self._publisher
        if publisher is not None and self._owns_publisher:
            self._publisher = None
            await asyncio.to_thread(publisher.close)

    async def handle(self, event: Any, ctx: JobContext) -> None:
        if event.event_type == "push.token_invalid":
            return
        consent = ctx.tables.get(CONSENT_FAMILY)
        if consent is None and not self._warned:
            self._warned = True
            log.warning(
                "push: this worker does not run the consent family: every promotional "
                "push is suppressed (run push and consent together)"
            )
        check_consent(consent, event)
        if event.respect_quiet_hours:
            wait_ms = quiet_wait_ms(self.quiet, event.timezone, self.clock_ms())
            if wait_ms > 0:
                # the rate gate already charged this push: it must not pay again when due
                raise Deferred(
                    wait_ms / 1000,
                    "quiet hours in the user's time zone",
                    kind="quiet_hours",
                    reserved=True,
                )
        body = self.notification(event)
        if self._session is None:
            await self.start()
        assert self._session is not None
        async with ctx.dependency(self.dependency):
            try:
                async with self._session.post(self.url, json=body, headers=self._auth()) as resp:
                    outcome = classify_reply(resp.status, resp.headers.get("Retry-After"))
                    reply = await resp.json(content_type=None) if outcome is None else None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Retryable(f"push provider unreachable: {type(exc).__name__}") from None
            if outcome is not None and not isinstance(outcome, Permanent):
                raise outcome
        if outcome is not None:
            raise outcome
        devices = list(event.device_ids)
        bad = invalid_devices(reply, devices)
        if bad:
            await self._report_invalid(event, bad, devices)
        if len(bad) == len(devices):
            raise Permanent(
                f"device_ids: the provider reports all {len(devices)} device token(s) invalid "
                "or expired (push.token_invalid published)"
            )
        log.info("push %s delivered to %d device(s)", event.event_id, len(devices) - len(bad))

    def notification(self, event: Any) -> dict[str, Any]:
        """The provider request body (targeting and personalisation)."""
        variables = dict(event.variables)
        return {
            "app_id": self.settings.push_app_id,
            "target_channel": "push",
            "include_subscription_ids": list(event.device_ids),
            "headings": {"en": personalise(event.title, variables, "title")},
            "contents": {"en": personalise(event.body, variables, "body")},
            "data": dict(event.data),
            "isIos": event.platform in ("any", "ios"),
            "isAndroid": event.platform in ("any", "android"),
            "idempotency_key": event.event_id,
        }

    def _auth(self) -> dict[str, str]:
        key = self.settings.push_api_key.get_secret_value()
        return {"Authorization": f"Key {key}"} if key else {}

    async def _report_invalid(self, event: Any, bad: list[str], devices: list[str]) -> None:
        assert self._publisher is not None
        for device in bad:
            await self._publisher.publish_async(
                "push.token_invalid",
                {"user_id": event.user_id, "device_id": device, "request_event_id": event.event_id},
                event_id=token_invalid_id(event.event_id, devices.index(device)),
            )
        log.info("push %s: %d invalid device token(s) reported", event.event_id, len(bad))


JOB = JobSpec(family="push", job_type=PushJob, settings_type=PushSettings, dependencies=("push",))

__all__ = ["JOB", "PushJob", "PushSettings", "json"]
