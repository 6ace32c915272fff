"""``POST /v1/events`` and ``POST /v1/events:batch``: events over HTTP, through the SDK.

Each event is validated exactly as ``Publisher`` validates (the same pydantic models and
Avro schemas, via ``publish.prepare``) and published with the API's SDK publisher
(acks=all, idempotent producer). The answer is 202 with, per event, where the broker
stored it (``event_id, topic, partition, offset``) only once every event of the request
was acknowledged. Otherwise:

- 400 the body is not JSON / a bad ``Idempotency-Key``; 413 body over
  ``STREAMS_API_MAX_BODY_BYTES`` or more than ``STREAMS_API_BATCH_MAX_EVENTS`` events;
  415 not ``application/json``; 422 an invalid event: ``errors`` = [{index, field,
  reason}], and then nothing of the request was sent;
- 409 the ``Idempotency-Key`` was used with another body (``idempotency``);
- 429 over the principal's rate limit (``throttle``), with ``Retry-After``;
- 503 the broker did not acknowledge within ``STREAMS_API_PUBLISH_TIMEOUT_S`` (plus
  ``ACK_GRACE_S``) or refused: ``reason``, and for a batch ``results`` where acknowledged
  events have their position and the others their error (never a hang, never a 2xx).

The envelope's ``tenant_id`` is the principal's tenant (from the token or API key): the
body has no field for it (``extra`` fields are refused).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from streams.api import control_plane
from streams.api.access import principal_of, requires
from streams.api.control_plane import plane_if_ready
from streams.api.idempotency import (
    IdempotencyStore,
    Remembered,
    body_digest,
    check_key,
    event_id_for,
)
from streams.api.openapi import Param, Probe, operation
from streams.api.problems import Problem
from streams.api.roles import Principal, Role
from streams.api.state import API_SETTINGS, publisher_of
from streams.api.throttle import Throttle
from streams.control.model import status_value
from streams.core.topology import family_of_event_type
from streams.errors import (
    BatchPublishError,
    BrokerUnavailable,
    DeliveryFailed,
    EventTooLarge,
    InvalidPayload,
    PublishError,
    UnknownEventType,
)
from streams.events import validation_errors
from streams.publish.outgoing import PublishResult

log = logging.getLogger("streams.api")
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)
THROTTLE = web.AppKey("ingest_throttle", Throttle)
JSON = "application/json"
REPLAYED = "Idempotent-Replayed"
ACK_GRACE_S = 1.0
"""Waited past the producer's ``message.timeout.ms`` (= the publish timeout) for
librdkafka's own verdict: an answer comes within publish timeout + this, never a hang."""


class EventIn(BaseModel):
    """One event: its type (``<family>.<name>``), its payload fields, optionally its key
    (which must equal the family's key field)."""

    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(min_length=1, max_length=256)
    payload: dict[str, Any]
    key: str | None = Field(default=None, min_length=1, max_length=256)
    not_before: AwareDatetime | None = Field(
        default=None,
        description="delayed event: run no earlier than this instant (RFC 3339 with offset), "
        "at most 30 days ahead",
    )
    delay_s: float | None = Field(
        default=None,
        ge=0,
        le=30 * 86_400,
        description="delayed event: run this many seconds from now (not with not_before)",
    )
    priority: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="one of the family's priority lanes (topics.yaml `priorities:`), e.g. "
        "`high`; omitted: the family's default lane. A family without lanes refuses it (422)",
    )


class BatchIn(BaseModel):
    """Events published together; all are validated before any is sent."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1)


class EventAccepted(BaseModel):
    """Where the broker stored the event (acknowledged by every in-sync replica)."""

    event_id: str
    topic: str
    partition: int
    offset: int


class BatchAccepted(BaseModel):
    results: list[EventAccepted]


class FieldError(BaseModel):
    """Why an event was refused: ``index`` in the batch (0 for a single event)."""

    index: int
    field: str
    reason: str


_KEY_PARAM = Param(
    "Idempotency-Key",
    "header",
    "1-200 printable ASCII characters; becomes the event id (tenant-prefixed). The same "
    "key with the same body answers the first result and publishes nothing new.",
    {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"},
)
_PROBLEMS = {
    400: "body not JSON, or a bad Idempotency-Key",
    409: "Idempotency-Key already used with another body",
    413: "body too large, or too many events",
    415: "Content-Type is not application/json",
    422: "an event is invalid: `errors` lists {index, field, reason}; nothing was sent",
    429: "rate limit of this principal exceeded (Retry-After)",
    503: "the broker did not acknowledge: `reason`; nothing unacknowledged reported accepted",
}


_SAMPLE = {
    "event_type": "audit.admin_action",
    "payload": {"subject_id": "probe", "actor_id": "probe", "action": "probe"},
}


def _accepted(result: PublishResult) -> dict[str, Any]:
    return {
        "event_id": result.event_id,
        "topic": result.topic,
        "partition": result.partition,
        "offset": result.offset,
    }


def _invalid(errors: list[dict[str, Any]]) -> Problem:
    first = errors[0]
    return Problem(
        422,
        "invalid-event",
        f"event {first['index']}: {first['field']}: {first['reason']}",
        extra={"errors": errors},
    )


def _field_errors(index: int, exc: PublishError) -> list[dict[str, Any]]:
    if isinstance(exc, InvalidPayload):
        return [{"index": index, "field": f, "reason": r} for f, r in exc.errors]
    if isinstance(exc, UnknownEventType):
        return [{"index": index, "field": "event_type", "reason": str(exc)}]
    if isinstance(exc, EventTooLarge):
        return [{"index": index, "field": "payload", "reason": str(exc)}]
    return [{"index": index, "field": "<event>", "reason": str(exc)}]


def _unavailable(reason: str, results: list[dict[str, Any]] | None = None) -> Problem:
    extra: dict[str, Any] = {"reason": reason}
    if results is not None:
        extra["results"] = results
    return Problem(503, "broker-unavailable", f"not acknowledged: {reason}", extra=extra)


async def _body(request: web.Request, model: type[BaseModel]) -> tuple[bytes, Any]:
    if request.content_type != JSON:
        raise Problem(415, "unsupported-media-type", f"Content-Type must be {JSON}")
    limit = request.app[API_SETTINGS].api_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, "too-large", f"body over {limit} bytes")
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, "invalid-json", f"body is not JSON: {exc}") from None
    try:
        return raw, model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for path, reason in validation_errors(exc):
            head, _, rest = path.partition(".")
            if model is BatchIn and head == "events" and rest.split(".")[0].isdigit():
                index, _, field = rest.partition(".")
                errors.append({"index": int(index), "field": field or "<event>", "reason": reason})
            else:
                errors.append({"index": 0, "field": path, "reason": reason})
        raise _invalid(errors) from None


async def _publish(
    request: web.Request,
    principal: Principal,
    events: list[EventIn],
    key: str | None,
    *,
    batch: bool,
) -> list[dict[str, Any]]:
    items = [
        {
            "event_type": e.event_type,
            "payload": e.payload,
            "key": e.key,
            "tenant_id": principal.tenant,
            "not_before": e.not_before,
            "delay_s": e.delay_s,
            "priority": e.priority,
            "event_id": None
            if key is None
            else event_id_for(principal.tenant, key, i if batch else None),
        }
        for i, e in enumerate(events)
    ]
    try:
        timeout_s = request.app[API_SETTINGS].api_publish_timeout_s + ACK_GRACE_S
        results = await publisher_of(request).publish_batch_async(items, timeout_s=timeout_s)
    except BatchPublishError as exc:
        if not exc.sent and not any(
            isinstance(e, BrokerUnavailable | DeliveryFailed) for e in exc.errors.values()
        ):
            fields = [f for i, e in sorted(exc.errors.items()) for f in _field_errors(i, e)]
            raise _invalid(fields) from None
        first = exc.errors[min(exc.errors)]
        log.warning("ingest not acknowledged: %s", exc)
        per_event = [
            _accepted(r) if r is not None else {"error": str(exc.errors.get(i, first))}
            for i, r in enumerate(exc.results or [None] * len(events))
        ]
        raise _unavailable(f"{type(first).__name__}: {first}", per_event) from None
    except PublishError as exc:
        log.warning("ingest not acknowledged: %s", exc)
        raise _unavailable(f"{type(exc).__name__}: {exc}") from None
    _note_accepted(request, principal, events, results)
    return [_accepted(r) for r in results]


def _note_accepted(
    request: web.Request,
    principal: Principal,
    events: list[EventIn],
    results: list[PublishResult],
) -> None:
    """Status ``accepted`` for what the broker acknowledged (``GET /v1/events/{id}``)."""
    plane = plane_if_ready(request.app)
    if plane is None:
        return
    at_ms = int(time.time() * 1000)
    plane.accepted.note(
        [
            (
                r.event_id,
                status_value(
                    event_id=r.event_id,
                    family=family_of_event_type(e.event_type),
                    event_type=e.event_type,
                    tenant_id=principal.tenant,
                    state="accepted",
                    attempt=1,
                    at_ms=at_ms,
                    published_at_ms=r.timestamp_ms,
                ),
            )
            for e, r in zip(events, results, strict=True)
        ]
    )


async def _ingest(request: web.Request, model: type[BaseModel], wrap: bool) -> web.Response:
    principal = principal_of(request)
    request.app[THROTTLE].check(principal.id)
    raw, body = await _body(request, model)
    events = body.events if isinstance(body, BatchIn) else [body]
    most = request.app[API_SETTINGS].api_batch_max_events
    if len(events) > most:
        raise Problem(413, "too-many-events", f"{len(events)} events, at most {most} a request")
    key = request.headers.get("Idempotency-Key")
    if key is None:
        results = await _publish(request, principal, events, None, batch=wrap)
        return _answer(results, wrap)
    why = check_key(key)
    if why is not None:
        raise Problem(
            400, "invalid-header", f"Idempotency-Key: {why}", extra={"header": "Idempotency-Key"}
        )
    store = request.app[IDEMPOTENCY]
    digest = body_digest(request.path.encode() + b"\n" + raw)
    lock = store.lock(principal.tenant, key)
    try:
        async with lock:
            seen = store.get(principal.tenant, key)
            if seen is not None:
                if seen.body_sha256 != digest:
                    raise Problem(
                        409, "idempotency-conflict", "Idempotency-Key was used with another body"
                    )
                return web.json_response(
                    seen.answer, status=seen.status, headers={REPLAYED: "true"}
                )
            results = await _publish(request, principal, events, key, batch=wrap)
            response = _answer(results, wrap)
            remembered = Remembered(digest, response.status, _payload(results, wrap))
            store.put(principal.tenant, key, remembered)
            return response
    finally:
        store.release(principal.tenant, key, lock)


def _payload(results: list[dict[str, Any]], wrap: bool) -> dict[str, Any]:
    return {"results": results} if wrap else results[0]


def _answer(results: list[dict[str, Any]], wrap: bool) -> web.Response:
    return web.json_response(_payload(results, wrap), status=202)


@requires(Role.PRODUCER)
@operation(
    "Publish one event",
    ok=(202, EventAccepted),
    tags=("ingest",),
    params=(_KEY_PARAM,),
    body=EventIn,
    problems=_PROBLEMS,
    models=(FieldError,),
    probe=Probe(ok=202, body=_SAMPLE),
)
async def post_event(request: web.Request) -> web.Response:
    return await _ingest(request, EventIn, wrap=False)


@requires(Role.PRODUCER)
@operation(
    "Publish a batch of events (all validated before any is sent)",
    ok=(202, BatchAccepted),
    tags=("ingest",),
    params=(_KEY_PARAM,),
    body=BatchIn,
    problems=_PROBLEMS,
    models=(FieldError,),
    probe=Probe(ok=202, body={"events": [_SAMPLE, _SAMPLE]}),
)
async def post_batch(request: web.Request) -> web.Response:
    return await _ingest(request, BatchIn, wrap=True)


def add_routes(app: web.Application) -> None:
    settings = app[API_SETTINGS]
    app[IDEMPOTENCY] = IdempotencyStore(settings.api_idempotency_max_keys)
    app[THROTTLE] = Throttle(settings.api_rate_limit_per_min)
    control_plane.install(app)
    app.router.add_post("/v1/events", post_event)
    app.router.add_post("/v1/events:batch", post_batch)
