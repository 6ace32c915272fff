"""Handlers for reliability tests: the side effect is a row in a SQLite ledger with a UNIQUE
event id (reliability.md), plus an attempts table counting every run.

Behaviour is driven by the event's ``details`` map (audit.claim_submitted):
  fail_times=N        raise Retryable on the first N attempts
  fail=permanent      raise Permanent every time
  fail=always         raise Retryable every time
  fail_unless=PATH    raise Permanent while the file PATH does not exist (a redrive after
                      the test created it succeeds)
  sleep_ms=N          await N ms before the side effect
  gate=PATH           await until the file PATH exists (a test opens the gate when its fault
                      is in place: the handler's outcome then follows the fault, not a guess)
Each attempt's ``at_ms`` is the process's wall clock (``time.time``, shifted by
``tests/support/clock_shift``), ``real_ms`` the system's (CLOCK_REALTIME, never shifted).
The ledger path comes from STREAMS_TEST_LEDGER (test support only; library code never reads
the environment).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from typing import Any

from streams.errors import Permanent, Retryable
from streams.jobs.base import JobContext
from streams.jobs.registry import handler
from tests.support.ledger_db import connect

_DB_PATH = os.environ.get("STREAMS_TEST_LEDGER", "ledger.db")
_conn: sqlite3.Connection | None = None


def _db() -> sqlite3.Connection:
    global _conn
    if _conn is None:
        _conn = connect(_DB_PATH)
    return _conn


@handler("audit.claim_submitted")
async def record(event: Any, ctx: JobContext) -> None:
    details = dict(event.details)
    now_ms = int(time.time() * 1000)
    due = int(ctx.headers.get("streams-due-at-ms", "0") or 0)
    db = _db()
    real_ms = int(time.clock_gettime(time.CLOCK_REALTIME) * 1000)
    db.execute(
        "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?)",
        (ctx.event_id, ctx.attempt, now_ms, due, os.getpid(), real_ms),
    )
    if details.get("sleep_ms"):
        await asyncio.sleep(int(details["sleep_ms"]) / 1000)
    while details.get("gate") and not os.path.exists(details["gate"]):
        await asyncio.sleep(0.01)
    if details.get("fail") == "permanent":
        raise Permanent("claim rejected by the test handler")
    if details.get("fail_unless") and not os.path.exists(details["fail_unless"]):
        raise Permanent("the test's fix is not in place")
    if details.get("fail") == "always":
        raise Retryable("the test dependency is down")
    if ctx.attempt <= int(details.get("fail_times", "0")):
        raise Retryable(f"transient failure on attempt {ctx.attempt}")
    try:
        db.execute(
            "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?)",
            (
                ctx.event_id,
                event.subject_id,
                int(details.get("seq", "-1")),
                ctx.attempt,
                now_ms,
                os.getpid(),
            ),
        )
    except sqlite3.IntegrityError:
        # the side effect's own idempotency (the peer dropping a duplicate): counted
        db.execute("INSERT INTO duplicates VALUES (?, ?, ?)", (ctx.event_id, now_ms, os.getpid()))
