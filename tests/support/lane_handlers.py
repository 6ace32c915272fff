"""Handlers for the priority-lane test: a high event's side effect is a row (event id, wall ms
at the handler's start) in a SQLite ledger; a low event holds its slot for
``details["sleep_ms"]`` and is counted, the count written every 100 events (a SQLite commit
per low event would cost the event loop more than the lanes being measured).
The ledger path comes from STREAMS_TEST_LEDGER (test support only).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from typing import Any

from streams.jobs.base import JobContext
from streams.jobs.registry import handler

_conn = sqlite3.connect(os.environ.get("STREAMS_TEST_LEDGER", "ledger.db"), isolation_level=None)
_conn.execute("PRAGMA journal_mode=WAL")
_conn.execute("CREATE TABLE IF NOT EXISTS high (event_id TEXT PRIMARY KEY, at_ms INTEGER)")
_conn.execute("CREATE TABLE IF NOT EXISTS low (pid INTEGER PRIMARY KEY, done INTEGER)")
_low_done = 0


@handler("audit.claim_submitted")
async def record(event: Any, ctx: JobContext) -> None:
    global _low_done
    now_ms = int(time.time() * 1000)
    if event.subject_id.startswith("high-"):
        _conn.execute("INSERT OR IGNORE INTO high VALUES (?, ?)", (ctx.event_id, now_ms))
        return
    await asyncio.sleep(int(dict(event.details).get("sleep_ms", "0")) / 1000)
    _low_done += 1
    if _low_done % 100 == 0:
        _conn.execute("INSERT OR REPLACE INTO low VALUES (?, ?)", (os.getpid(), _low_done))
