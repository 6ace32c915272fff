"""The side-effect ledger of the reliability tests' handlers (SQLite, WAL): ``ledger`` holds
one row per event done (UNIQUE event id: a second side effect is refused and counted in
``duplicates``), ``attempts`` one row per handler run, ``batch_calls`` one row per call of a
batch handler (the event ids it was given, in order). Shared by the plain handlers
(``ledger_handlers``), the batch handlers (``batch_handlers``) and the tests that read it.
"""

from __future__ import annotations

import sqlite3


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS ledger (event_id TEXT PRIMARY KEY, subject_id TEXT,"
        " seq INTEGER, attempt INTEGER, done_at_ms INTEGER, pid INTEGER)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS attempts (event_id TEXT, attempt INTEGER, at_ms INTEGER,"
        " due_at_ms INTEGER, pid INTEGER, real_ms INTEGER)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS duplicates (event_id TEXT, at_ms INTEGER, pid INTEGER)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS batch_calls (pid INTEGER, size INTEGER, ids TEXT,"
        " at_ms INTEGER, key_order_ok INTEGER)"
    )
    return conn
