"""``/v1/dlq/{family}/...``: the DLQ operations of ``streams dlq`` for operators.

Tenant-scoped like the audit log (``tenancy.tenant_scope``): a tenant-bound operator sees,
redrives and resolves only records whose envelope names its tenant; a platform admin names
one (``tenant=``) or ``*``. The engine is ``streams.dlq`` (blocking confluent-kafka reads,
run in a worker thread); a redrive that sends starts in the background and answers 202
with its id, its progress and outcome at ``GET .../redrives/{redrive_id}``. Every write
(redrive, dry run included, delete, purge) is audited with ``admin_action``.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from streams.api.access import principal_of, requires
from streams.api.openapi import Param, Probe, operation
from streams.api.problems import Problem, bad_parameter
from streams.api.roles import Role
from streams.api.state import PUBLISHER
from streams.api.tenancy import tenant_scope
from streams.errors import CatalogError, DlqError, StreamsError, TopologyError
from streams.jobs.audit_store import ANY_TENANT

_MISSING = {404: "unknown family, or no such record or redrive", 400: "a bad filter"}
_FAMILY = Param("family", "path", "the job family, e.g. webhook", required=True)
_PROBE = Probe(ok=404, path={"family": "nosuchfamily"})
_FILTER_PARAMS = (
    Param("reason", "query", "dead-letter reason (exhausted, permanent, ...)"),
    Param("error_class", "query", "error class, full or last dotted part"),
    Param("fingerprint", "query", "error fingerprint"),
    Param("event_type", "query", "event type"),
    Param("key", "query", "record key"),
    Param("since", "query", "failed at or after (ISO 8601, epoch ms or an age such as 2h)"),
    Param("until", "query", "failed before (ISO 8601, epoch ms or an age)"),
    Param("min_attempt", "query", "attempt at least", {"type": "string", "pattern": "^[0-9]+$"}),
    Param("max_attempt", "query", "attempt at most", {"type": "string", "pattern": "^[0-9]+$"}),
    Param("grep", "query", "text in the error message"),
    Param("tenant", "query", "tenant (a platform admin must name one, or *)"),
)


class FilterBody(BaseModel):
    """Selection criteria (each list: any of; the criteria: all of)."""

    reasons: list[str] = Field(default_factory=list)
    error_classes: list[str] = Field(default_factory=list)
    fingerprints: list[str] = Field(default_factory=list)
    event_types: list[str] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=list)
    since: str | None = None
    until: str | None = None
    min_attempt: int | None = None
    max_attempt: int | None = None
    grep: str | None = None
    tenant: str | None = None


class RedriveRequest(BaseModel):
    filters: FilterBody = Field(default_factory=FilterBody)
    dry_run: bool = False
    rate_per_s: float | None = Field(default=None, gt=0)
    canary: int = Field(default=0, ge=0)
    max_failure_rate: float | None = Field(default=None, ge=0, le=1)
    max_replays: int = Field(default=3, ge=1)
    outcome_timeout_s: float = Field(default=120.0, gt=0)


class DeleteRequest(BaseModel):
    positions: list[str] = Field(min_length=1, description="PARTITION:OFFSET of each record")
    note: str = ""


class PurgeRequest(BaseModel):
    older_than: str = Field(description="failed longer ago than this, e.g. 7d")
    filters: FilterBody = Field(default_factory=FilterBody)
    dry_run: bool = False
    note: str = ""


class RecordsPage(BaseModel):
    """The most recent matching records (oldest first) and how many matched."""

    matched: int
    records: list[dict[str, Any]]


class JsonBody(BaseModel):
    """A JSON object (statistics, a record, a redrive report or checkpoint)."""

    model_config = {"extra": "allow"}


# --- helpers --------------------------------------------------------------------------


def _kafka(request: web.Request) -> tuple[Any, Any]:
    publisher = request.app[PUBLISHER]
    return publisher.settings, publisher.catalog


def _selection(request: web.Request, body: FilterBody) -> Any:
    from streams.dlq.filters import DlqFilter, parse_time_ms

    scope = tenant_scope(principal_of(request), body.tenant)
    now_ms = int(time.time() * 1000)
    try:
        return DlqFilter.build(
            reasons=body.reasons,
            error_classes=body.error_classes,
            fingerprints=body.fingerprints,
            event_types=body.event_types,
            tenants=() if scope == ANY_TENANT else (str(scope),),
            keys=body.keys,
            since_ms=parse_time_ms(body.since, now_ms) if body.since else None,
            until_ms=parse_time_ms(body.until, now_ms) if body.until else None,
            min_attempt=body.min_attempt,
            max_attempt=body.max_attempt,
            text=body.grep,
        )
    except DlqError as exc:
        raise Problem(400, "invalid-filter", str(exc)) from None


def _query_filter(request: web.Request) -> FilterBody:
    q = request.query
    try:
        return FilterBody(
            reasons=q.getall("reason", []),
            error_classes=q.getall("error_class", []),
            fingerprints=q.getall("fingerprint", []),
            event_types=q.getall("event_type", []),
            keys=q.getall("key", []),
            since=q.get("since"),
            until=q.get("until"),
            min_attempt=int(q["min_attempt"]) if "min_attempt" in q else None,
            max_attempt=int(q["max_attempt"]) if "max_attempt" in q else None,
            grep=q.get("grep"),
            tenant=q.get("tenant"),
        )
    except ValueError:
        raise bad_parameter("min_attempt", "must be a whole number") from None


async def _json(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(await request.json())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<body>"
        raise Problem(400, "invalid-body", f"{where}: {first['msg']}") from None
    except ValueError:
        raise Problem(400, "invalid-body", "the body must be a JSON object") from None


async def _off_loop(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except (CatalogError, TopologyError) as exc:
        raise Problem(404, "not-found", str(exc)) from None
    except DlqError as exc:
        if type(exc).__name__ == "RedriveBusy":
            raise Problem(409, "redrive-running", str(exc)) from None
        raise Problem(400, "invalid-request", str(exc)) from None
    except StreamsError as exc:
        raise Problem(503, "broker-unavailable", str(exc)) from None


def _open(settings: Any, catalog: Any, family: str) -> Any:
    from streams.dlq.reader import DlqReader
    from streams.dlq.records import dlq_topic_for

    return DlqReader(settings, dlq_topic_for(settings, catalog, family))


def _store(settings: Any) -> Any:
    from streams.serde import SchemaStore

    return SchemaStore.load(settings.schemas_dir)


# --- reads ----------------------------------------------------------------------------


def _list(settings: Any, catalog: Any, family: str, selection: Any, limit: int) -> dict[str, Any]:
    from streams.dlq.selection import select

    heap: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
    matched = 0
    with _open(settings, catalog, family) as reader:
        for record, tenant, state in select(
            settings, reader, _store(settings), selection, want_tenant=True
        ):
            matched += 1
            order = (record.failed_at_ms or 0, record.partition, record.offset)
            row = record.summary() | {"tenant_id": tenant, "state": state or "open"}
            if len(heap) < limit:
                heapq.heappush(heap, (order, row))
            elif order > heap[0][0]:
                heapq.heapreplace(heap, (order, row))
    return {"matched": matched, "records": [row for _o, row in sorted(heap, key=lambda i: i[0])]}


@requires(Role.OPERATOR)
@operation(
    "The most recent matching DLQ records of a family",
    ok=(200, RecordsPage),
    tags=("dlq",),
    params=(
        _FAMILY,
        *_FILTER_PARAMS,
        Param("limit", "query", "at most this many", {"type": "string", "pattern": "^[0-9]+$"}),
    ),
    problems={**_MISSING, 503: "broker unavailable"},
    probe=_PROBE,
)
async def list_records(request: web.Request) -> web.Response:
    settings, catalog = _kafka(request)
    selection = _selection(request, _query_filter(request))
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise bad_parameter("limit", "a whole number from 1 to 1000")
    body = await _off_loop(
        _list, settings, catalog, request.match_info["family"], selection, int(raw)
    )
    return web.json_response(body)


def _stats(settings: Any, catalog: Any, family: str, selection: Any) -> dict[str, Any]:
    from streams.dlq.records import DlqStats
    from streams.dlq.selection import select
    from streams.dlq.views import Breakdown

    with _open(settings, catalog, family) as reader:
        breakdown = Breakdown(DlqStats(reader.topic))
        hidden = [0]
        for record, tenant, _state in select(
            settings, reader, _store(settings), selection, want_tenant=True, hidden=hidden
        ):
            breakdown.add(record, tenant)
        breakdown.resolved = hidden[0]
    return breakdown.as_json(20)


@requires(Role.OPERATOR)
@operation(
    "DLQ statistics of a family: by reason, type, tenant, fingerprint, hour and day",
    ok=(200, JsonBody),
    tags=("dlq",),
    params=(_FAMILY, *_FILTER_PARAMS),
    problems={**_MISSING, 503: "broker unavailable"},
    probe=_PROBE,
)
async def stats(request: web.Request) -> web.Response:
    settings, catalog = _kafka(request)
    selection = _selection(request, _query_filter(request))
    body = await _off_loop(_stats, settings, catalog, request.match_info["family"], selection)
    return web.json_response(body)


def _show(settings: Any, catalog: Any, family: str, position: str, selection: Any) -> Any:
    from streams.dlq.records import describe_value, parse_position

    partition, offset = parse_position(position)
    with _open(settings, catalog, family) as reader:
        record = reader.get(partition, offset)
    store = _store(settings)
    from streams.dlq.tenants import TenantLookup

    tenant = TenantLookup(store).of(record)
    if not selection.matches(record, tenant):
        return None  # outside this principal's tenant: as if absent
    value = describe_value(store, record.value)
    return record.summary() | {"headers": record.headers, "value": value.as_json()}


@requires(Role.OPERATOR)
@operation(
    "One DLQ record: every header and the decoded value",
    ok=(200, JsonBody),
    tags=("dlq",),
    params=(
        _FAMILY,
        Param("position", "path", "PARTITION:OFFSET", required=True),
        Param("tenant", "query", "tenant (a platform admin must name one, or *)"),
    ),
    problems={**_MISSING, 503: "broker unavailable"},
    probe=Probe(ok=404, path={"family": "nosuchfamily", "position": "0:0"}),
)
async def show(request: web.Request) -> web.Response:
    settings, catalog = _kafka(request)
    selection = _selection(request, FilterBody(tenant=request.query.get("tenant")))
    body = await _off_loop(
        _show,
        settings,
        catalog,
        request.match_info["family"],
        request.match_info["position"],
        selection,
    )
    if body is None:
        raise Problem(404, "not-found", "no such record in this tenant")
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    from streams.api.dlq_write_routes import add_write_routes

    app.router.add_get("/v1/dlq/{family}/records", list_records)
    app.router.add_get("/v1/dlq/{family}/stats", stats)
    app.router.add_get("/v1/dlq/{family}/records/{position}", show)
    add_write_routes(app)
