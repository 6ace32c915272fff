"""A batch handler for reliability tests (``--handlers tests.support.batch_handlers``): the
``audit.claim_submitted`` events of a batch, with the SQLite side-effect ledger of
``ledger_db`` written in one transaction per call.

Each call first records itself in ``batch_calls`` (its event ids in the order given, and
whether each subject's ``seq`` values came in increasing order) and one ``attempts`` row
per event: that is the progress a test waits for. Per event, from its ``details``:
  fail_times=N   its outcome is ``Retryable`` on its first N attempts (returned, not raised)
  hold=1         with STREAMS_TEST_BATCH_GATE set, the call waits until that file exists
                 before any side effect (a test SIGKILLs the worker meanwhile: the killed
                 batch wrote nothing)
The events done get their ``ledger`` row in one transaction (a second side effect for an
id is refused by the UNIQUE id and counted in ``duplicates``). Paths come from the
environment (STREAMS_TEST_LEDGER; test support only, library code never reads it).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from typing import Any

from streams.errors import Retryable
from streams.jobs.batch import DONE, Batch, BatchContext, Outcome
from streams.jobs.registry import handler
from tests.support.ledger_db import connect

BATCH = Batch(max_events=100, max_wait_ms=1000)  # seed 002: BATCH_SIZE 100, BATCH_INTERVAL 1 s
_DB_PATH = os.environ.get("STREAMS_TEST_LEDGER", "ledger.db")
_GATE = os.environ.get("STREAMS_TEST_BATCH_GATE", "")
_conn: sqlite3.Connection | None = None


def _db() -> sqlite3.Connection:
    global _conn
    if _conn is None:
        _conn = connect(_DB_PATH)
    return _conn


def _keys_in_order(events: list[Any]) -> bool:
    last: dict[str, int] = {}
    for event in events:
        seq = int(dict(event.details).get("seq", "-1"))
        if seq < last.get(event.subject_id, -1):
            return False
        last[event.subject_id] = seq
    return True


@handler("audit.claim_submitted", batch=BATCH)
async def record_batch(events: list[Any], ctx: BatchContext) -> list[Outcome]:
    db = _db()
    now_ms = int(time.time() * 1000)
    pid = os.getpid()
    ids = [c.event_id for c in ctx.contexts]
    db.execute(
        "INSERT INTO batch_calls VALUES (?, ?, ?, ?, ?)",
        (pid, len(events), ",".join(ids), now_ms, int(_keys_in_order(events))),
    )
    real_ms = int(time.clock_gettime(time.CLOCK_REALTIME) * 1000)
    due = [int(c.headers.get("streams-due-at-ms", "0") or 0) for c in ctx.contexts]
    db.executemany(
        "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?)",
        [
            (c.event_id, c.attempt, now_ms, due_ms, pid, real_ms)
            for c, due_ms in zip(ctx.contexts, due, strict=True)
        ],
    )
    details = [dict(event.details) for event in events]
    if _GATE and any(d.get("hold") for d in details):
        while not os.path.exists(_GATE):
            await asyncio.sleep(0.01)
    outcomes: list[Outcome] = []
    db.execute("BEGIN")
    for event, c, d in zip(events, ctx.contexts, details, strict=True):
        if c.attempt <= int(d.get("fail_times", "0")):
            outcomes.append(Retryable(f"batch test: planned failure on attempt {c.attempt}"))
            continue
        try:
            db.execute(
                "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?)",
                (c.event_id, event.subject_id, int(d.get("seq", "-1")), c.attempt, now_ms, pid),
            )
        except sqlite3.IntegrityError:
            db.execute("INSERT INTO duplicates VALUES (?, ?, ?)", (c.event_id, now_ms, pid))
        outcomes.append(DONE)
    db.execute("COMMIT")
    return outcomes
