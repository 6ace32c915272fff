"""The sample application schema (its own Alembic migrations, version table
``sample_app_alembic_version``) and a deterministic data generator for tests and bench.

``generate`` writes old and new, read and unread rows of every table, some accounts on
legal hold, and returns the rows it wrote so a test can compute what each policy must
leave by itself (independently of the engine's SQL).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from streams.store.database import Database

SAMPLE_MIGRATIONS = Path(__file__).resolve().parent / "sample_migrations"
DAY_MS = 86_400_000
TABLES = (
    "accounts",
    "orders",
    "chat_messages",
    "sessions",
    "refresh_tokens",
    "audit_logs",
    "notifications",
    "payment_records",
)


def _reflect(md: sa.MetaData, name: str, connection: Connection) -> sa.Table:
    return sa.Table(name, md, autoload_with=connection)


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(SAMPLE_MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate_sample(db: Database) -> None:
    """Create (or upgrade) the sample application tables in ``db``."""
    async with db.transaction(timeout_s=120) as conn:
        await conn.run_sync(_upgrade)


def _rows(rng: random.Random, n: int, tick_ms: int, max_age_days: int) -> Iterable[int]:
    for _ in range(n):
        yield tick_ms - rng.randrange(0, max_age_days * DAY_MS)


def build_rows(
    tick_ms: int, rows: int, *, holds: Iterable[str], seed: int = 11
) -> dict[str, list[dict[str, Any]]]:
    """Rows for every sample table (``rows`` per event table, rows//10 accounts)."""
    rng = random.Random(seed)
    held = sorted(holds)
    users = [f"u{i}" for i in range(max(10, rows // 10))] + held
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}

    def user() -> str:
        return rng.choice(users)

    for i, uid in enumerate(users):
        inactive_days = rng.choice([10, 200, 700, 760, 800, 1000])
        notice = None
        if inactive_days >= 700:
            notice = rng.choice([None, tick_ms - 40 * DAY_MS, tick_ms - 10 * DAY_MS])
        out["accounts"].append(
            {
                "id": uid,
                "email": f"{uid}@example.com",
                "name": f"User {i}",
                "created_at_ms": tick_ms - 1200 * DAY_MS,
                "last_active_at_ms": tick_ms - inactive_days * DAY_MS,
                "deletion_notice_at_ms": notice,
            }
        )
    for i, ts in enumerate(_rows(rng, rows, tick_ms, 1100), 1):
        uid = user()
        out["orders"].append(
            {
                "id": i,
                "account_id": uid,
                "customer_name": f"Name of {uid}",
                "customer_email": f"{uid}@example.com",
                "shipping_address": f"{i} Main St",
                "total_cents": rng.randrange(100, 100_000),
                "created_at_ms": ts,
                "anonymized_at_ms": None,
            }
        )
    for i, ts in enumerate(_rows(rng, rows, tick_ms, 200), 1):
        out["chat_messages"].append(
            {
                "id": i,
                "sender_id": user(),
                "body": f"message {i}",
                "is_read": rng.random() < 0.7,
                "created_at_ms": ts,
            }
        )
    for i, ts in enumerate(_rows(rng, rows, tick_ms, 30), 1):
        out["sessions"].append(
            {"id": i, "user_id": user(), "created_at_ms": ts - DAY_MS, "last_activity_at_ms": ts}
        )
    for i, ts in enumerate(_rows(rng, rows, tick_ms, 60), 1):
        out["refresh_tokens"].append(
            {"id": i, "user_id": user(), "created_at_ms": ts, "expires_at_ms": ts + 30 * DAY_MS}
        )
    for i, ts in enumerate(_rows(rng, rows, tick_ms, 800), 1):
        out["audit_logs"].append(
            {
                "id": i,
                "actor_id": user(),
                "action": "claim.updated",
                "severity": "critical" if rng.random() < 0.1 else "info",
                "created_at_ms": ts,
            }
        )
    for i, ts in enumerate(_rows(rng, rows, tick_ms, 200), 1):
        out["notifications"].append(
            {"id": i, "user_id": user(), "is_read": rng.random() < 0.6, "created_at_ms": ts}
        )
    for i, ts in enumerate(_rows(rng, rows, tick_ms, 1500), 1):
        out["payment_records"].append(
            {
                "id": i,
                "user_id": user(),
                "amount_cents": rng.randrange(100, 100_000),
                "created_at_ms": ts,
                "archived_at_ms": None,
            }
        )
    return out


async def generate(
    db: Database, tick_ms: int, rows: int, *, holds: Iterable[str] = (), seed: int = 11
) -> dict[str, list[dict[str, Any]]]:
    """Migrate the sample schema, fill it with ``build_rows`` and return those rows."""
    await migrate_sample(db)
    data = build_rows(tick_ms, rows, holds=holds, seed=seed)
    md = sa.MetaData()
    async with db.transaction(timeout_s=300) as conn:
        for name in TABLES:
            table = await conn.run_sync(partial(_reflect, md, name))
            chunk = 5000
            rows_of = data[name]
            for i in range(0, len(rows_of), chunk):
                await conn.execute(sa.insert(table), rows_of[i : i + chunk])
    return data
