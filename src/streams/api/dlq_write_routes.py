"""The write side of ``/v1/dlq/{family}``: redrive (dry run or run), its progress,
delete and purge. Shared parsing and models are ``streams.api.dlq_routes``'."""

from __future__ import annotations

import threading
import time
from typing import Any

from aiohttp import web

from streams.api.access import principal_of, requires
from streams.api.admin_audit import admin_action
from streams.api.dlq_routes import (
    _FAMILY,
    _MISSING,
    DeleteRequest,
    JsonBody,
    PurgeRequest,
    RedriveRequest,
    _json,
    _kafka,
    _off_loop,
    _open,
    _selection,
    _store,
)
from streams.api.openapi import Param, Probe, operation
from streams.api.problems import Problem
from streams.api.roles import Role

_running: dict[str, threading.Thread] = {}


def _engine(settings: Any, catalog: Any, family: str) -> Any:
    from streams.dlq.redrive import Redrive
    from streams.dlq.tenants import TenantLookup

    return Redrive(settings, catalog, family, tenants=TenantLookup(_store(settings)))


def _options(body: RedriveRequest) -> Any:
    from streams.dlq.redrive import Options

    return Options(
        rate_per_s=body.rate_per_s,
        canary=body.canary,
        max_failure_rate=body.max_failure_rate,
        max_replays=body.max_replays,
        outcome_timeout_s=body.outcome_timeout_s,
    )


def _start(
    settings: Any,
    catalog: Any,
    family: str,
    selection: Any,
    options: Any,
    actor: str,
    resume_id: str | None = None,
) -> str:
    """Start (or resume) the redrive in a thread once its checkpoint exists; its id."""
    from streams.dlq.redrive import new_redrive_id

    engine = _engine(settings, catalog, family)
    redrive_id = resume_id or new_redrive_id(int(time.time() * 1000))
    if redrive_id in _running:
        raise Problem(409, "redrive-running", f"redrive {redrive_id} is running in this process")
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if resume_id:
                started.set()
                engine.resume(resume_id)
            else:
                engine.start(
                    selection,
                    options,
                    actor=actor,
                    redrive_id=redrive_id,
                    on_started=lambda _id: started.set(),
                )
        except BaseException as exc:  # after the start: reported through the checkpoint
            failure.append(exc)
        finally:
            started.set()
            _running.pop(redrive_id, None)

    thread = threading.Thread(target=run, name=f"redrive-{redrive_id}", daemon=True)
    _running[redrive_id] = thread
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    return redrive_id


@requires(Role.OPERATOR)
@operation(
    "Redrive matching DLQ records (dry run: what would be sent; run: 202 and its id)",
    ok=(200, JsonBody),
    tags=("dlq",),
    params=(_FAMILY,),
    body=RedriveRequest,
    problems={**_MISSING, 503: "broker or audit unavailable"},
    probe=Probe(ok=404, path={"family": "nosuchfamily"}, body={"dry_run": True}),
)
async def redrive(request: web.Request) -> web.Response:
    settings, catalog = _kafka(request)
    family = request.match_info["family"]
    body: RedriveRequest = await _json(request, RedriveRequest)
    selection = _selection(request, body.filters)
    options = _options(body)
    action = "dlq.redrive.dry_run" if body.dry_run else "dlq.redrive"
    async with admin_action(request, action, target=f"dlq/{family}") as audit:
        audit.details["filters"] = str(selection.describe())
        if body.dry_run:
            engine = await _off_loop(_engine, settings, catalog, family)
            report = await _off_loop(engine.plan, selection, options)
            audit.details["would_send"] = str(report.sent)
            return web.json_response(report.as_json())
        actor = principal_of(request).id
        redrive_id = await _off_loop(_start, settings, catalog, family, selection, options, actor)
        audit.details["redrive_id"] = redrive_id
    return web.json_response(
        {"redrive_id": redrive_id, "status": f"/v1/dlq/{family}/redrives/{redrive_id}"},
        status=202,
    )


def _checkpoint(settings: Any, redrive_id: str) -> Any:
    from streams.dlq.kafka_io import CheckpointStore

    return CheckpointStore(settings).load(redrive_id)


@requires(Role.OPERATOR)
@operation(
    "A redrive's checkpoint: state, counts, outcome",
    ok=(200, JsonBody),
    tags=("dlq",),
    params=(_FAMILY, Param("redrive_id", "path", "the redrive id", required=True)),
    problems={**_MISSING, 503: "broker unavailable"},
    probe=Probe(ok=404, path={"family": "nosuchfamily", "redrive_id": "rd-none"}),
)
async def get_redrive(request: web.Request) -> web.Response:
    import json

    settings, catalog = _kafka(request)
    family = request.match_info["family"]
    await _off_loop(catalog.family, family)  # 404 for an unknown family
    found = await _off_loop(_checkpoint, settings, request.match_info["redrive_id"])
    if found is None or found.family != family:
        raise Problem(404, "not-found", "no such redrive")
    body = json.loads(found.to_json()) | {"running": found.redrive_id in _running}
    return web.json_response(body)


def _resumable(settings: Any, family: str, redrive_id: str, tenant: Any) -> Any:
    from streams.jobs.audit_store import ANY_TENANT

    found = _checkpoint(settings, redrive_id)
    if found is None or found.family != family:
        raise Problem(404, "not-found", "no such redrive")
    if tenant != ANY_TENANT and found.selection.get("tenants") != [tenant]:
        raise Problem(404, "not-found", "no such redrive in this tenant")
    if found.state == "done":
        raise Problem(409, "redrive-done", f"redrive {redrive_id} is done; nothing to resume")
    from streams.dlq.redrive import LIVE_AFTER_MS

    if found.state == "running" and time.time() * 1000 - found.updated_at_ms < LIVE_AFTER_MS:
        raise Problem(409, "redrive-running", f"redrive {redrive_id} may still be running")
    return found


@requires(Role.OPERATOR)
@operation(
    "Resume a stopped or interrupted redrive (202; it never sends a record twice)",
    ok=(202, JsonBody),
    tags=("dlq",),
    params=(
        _FAMILY,
        Param("redrive_id", "path", "the redrive id", required=True),
        Param("tenant", "query", "tenant (a platform admin must name one, or *)"),
    ),
    problems={
        **_MISSING,
        409: "the redrive is done or running",
        503: "broker or audit unavailable",
    },
    probe=Probe(ok=404, path={"family": "nosuchfamily", "redrive_id": "rd-none"}),
)
async def resume_redrive(request: web.Request) -> web.Response:
    from streams.api.tenancy import tenant_scope

    settings, catalog = _kafka(request)
    family = request.match_info["family"]
    redrive_id = request.match_info["redrive_id"]
    tenant = tenant_scope(principal_of(request), request.query.get("tenant"))
    await _off_loop(catalog.family, family)
    async with admin_action(request, "dlq.redrive.resume", target=redrive_id):
        await _off_loop(_resumable, settings, family, redrive_id, tenant)
        await _off_loop(_start, settings, catalog, family, None, None, "", redrive_id)
    return web.json_response(
        {"redrive_id": redrive_id, "status": f"/v1/dlq/{family}/redrives/{redrive_id}"},
        status=202,
    )


def _delete(
    settings: Any, catalog: Any, family: str, body: DeleteRequest, selection: Any, actor: str
) -> int:
    from streams.dlq.kafka_io import StateStore
    from streams.dlq.records import parse_position
    from streams.dlq.replay import source_of
    from streams.dlq.tenants import TenantLookup

    store = StateStore(settings)
    tenants = TenantLookup(_store(settings))
    marked = []
    with _open(settings, catalog, family) as reader:
        for text in body.positions:
            record = reader.get(*parse_position(text))
            if not selection.matches(record, tenants.of(record)):
                raise Problem(404, "not-found", f"no record {text} in this tenant")
            marked.append(source_of(record))
    now_ms = int(time.time() * 1000)
    for source in marked:
        store.mark(source, "resolved", actor=actor, at_ms=now_ms, note=body.note)
    store.flush()
    return len(marked)


@requires(Role.OPERATOR)
@operation(
    "Mark DLQ records resolved (hidden from list/stats, never redriven)",
    ok=(200, JsonBody),
    tags=("dlq",),
    params=(_FAMILY,),
    body=DeleteRequest,
    problems={**_MISSING, 503: "broker or audit unavailable"},
    probe=Probe(ok=404, path={"family": "nosuchfamily"}, body={"positions": ["0:0"]}),
)
async def delete(request: web.Request) -> web.Response:
    settings, catalog = _kafka(request)
    family = request.match_info["family"]
    body: DeleteRequest = await _json(request, DeleteRequest)
    selection = _selection(request, _no_filter())
    async with admin_action(request, "dlq.delete", target=f"dlq/{family}") as audit:
        audit.details["positions"] = ",".join(body.positions)[:2000]
        count = await _off_loop(
            _delete, settings, catalog, family, body, selection, principal_of(request).id
        )
        audit.details["count"] = str(count)
    return web.json_response({"resolved": count})


def _no_filter() -> Any:
    from streams.api.dlq_routes import FilterBody

    return FilterBody()


def _purge(
    settings: Any, catalog: Any, family: str, body: PurgeRequest, selection: Any, actor: str
) -> int:
    from dataclasses import replace

    from streams.dlq.filters import parse_age_ms
    from streams.dlq.kafka_io import StateStore
    from streams.dlq.replay import source_of
    from streams.dlq.selection import select

    now_ms = int(time.time() * 1000)
    cutoff = now_ms - parse_age_ms(body.older_than)
    until = cutoff if selection.until_ms is None else min(cutoff, selection.until_ms)
    selection = replace(selection, until_ms=until)
    store = StateStore(settings)
    count = 0
    with _open(settings, catalog, family) as reader:
        for record, _tenant, _state in select(settings, reader, _store(settings), selection):
            count += 1
            if not body.dry_run:
                store.mark(source_of(record), "resolved", actor=actor, at_ms=now_ms, note=body.note)
    store.flush()
    return count


@requires(Role.OPERATOR)
@operation(
    "Mark every matching DLQ record older than older_than resolved",
    ok=(200, JsonBody),
    tags=("dlq",),
    params=(_FAMILY,),
    body=PurgeRequest,
    problems={**_MISSING, 503: "broker or audit unavailable"},
    probe=Probe(ok=404, path={"family": "nosuchfamily"}, body={"older_than": "7d"}),
)
async def purge(request: web.Request) -> web.Response:
    settings, catalog = _kafka(request)
    family = request.match_info["family"]
    body: PurgeRequest = await _json(request, PurgeRequest)
    selection = _selection(request, body.filters)
    async with admin_action(request, "dlq.purge", target=f"dlq/{family}") as audit:
        audit.details["older_than"] = body.older_than
        count = await _off_loop(
            _purge, settings, catalog, family, body, selection, principal_of(request).id
        )
        audit.details["count"] = str(count)
        audit.details["dry_run"] = str(body.dry_run).lower()
    return web.json_response({"resolved": 0 if body.dry_run else count, "matched": count})


def add_write_routes(app: web.Application) -> None:
    app.router.add_post("/v1/dlq/{family}/redrive", redrive)
    app.router.add_get("/v1/dlq/{family}/redrives/{redrive_id}", get_redrive)
    app.router.add_post("/v1/dlq/{family}/redrives/{redrive_id}/resume", resume_redrive)
    app.router.add_post("/v1/dlq/{family}/delete", delete)
    app.router.add_post("/v1/dlq/{family}/purge", purge)
