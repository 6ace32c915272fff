# ruff: noqa: F811  (the store_url and postgres_server fixtures are imported by name)
"""The SQL store against real databases: SQLite and a PostgreSQL server of our own."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert, select, text
from tests.support.postgres import postgres_server, store_url  # noqa: F401 - fixtures

from streams.errors import Permanent, Retryable
from streams.store import Database, StoreSettings
from streams.store.migrate import current_revision, head_revision
from streams.store.schema import audit_chain_heads


async def test_migrations_create_the_schema_once_even_when_workers_race(store_url: str) -> None:
    dbs = [Database(store_url) for _ in range(4)]
    try:
        assert await current_revision(dbs[0]) is None
        revisions = await asyncio.gather(*(db.migrate() for db in dbs))
        assert revisions == [head_revision()] * 4
        assert await dbs[0].migrate() == head_revision()
        async with dbs[0].transaction(write=False) as conn:
            assert (await conn.execute(select(audit_chain_heads))).all() == []
    finally:
        for db in dbs:
            await db.dispose()


async def test_a_transaction_commits_or_rolls_back_as_a_whole(store_url: str) -> None:
    db = Database(store_url)
    await db.migrate()
    row = {"subject_id": "s1", "seq": 1, "hash": "h", "updated_at_ms": 1}
    try:
        async with db.transaction() as conn:
            await conn.execute(insert(audit_chain_heads), row)
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute(insert(audit_chain_heads), {**row, "subject_id": "s2"})
                raise RuntimeError("the caller fails")
        async with db.transaction(write=False) as conn:
            subjects = (await conn.scalars(select(audit_chain_heads.c.subject_id))).all()
        assert subjects == ["s1"]
    finally:
        await db.dispose()


async def test_a_constraint_violation_is_permanent_and_names_the_unique_violation(
    store_url: str,
) -> None:
    from streams.store.errors import is_unique_violation

    db = Database(store_url)
    await db.migrate()
    row = {"subject_id": "s1", "seq": 1, "hash": "h", "updated_at_ms": 1}
    try:
        async with db.transaction() as conn:
            await conn.execute(insert(audit_chain_heads), row)
        with pytest.raises(Permanent) as caught:
            async with db.transaction() as conn:
                await conn.execute(insert(audit_chain_heads), row)
        assert caught.value.__cause__ is not None and is_unique_violation(caught.value.__cause__)
        with pytest.raises(Permanent) as caught:
            async with db.transaction() as conn:
                await conn.execute(
                    insert(audit_chain_heads), {**row, "subject_id": "s3", "seq": None}
                )
        assert not is_unique_violation(caught.value.__cause__ or caught.value)
    finally:
        await db.dispose()


async def test_a_call_past_its_timeout_is_retryable(store_url: str) -> None:
    db = Database(store_url, timeout_s=0.5)
    await db.migrate()
    try:
        with pytest.raises(Retryable):
            async with db.transaction() as conn:
                if db.dialect == "postgresql":
                    await conn.execute(text("SELECT pg_sleep(5)"))
                else:
                    await asyncio.sleep(5)  # the deadline covers the whole transaction
        async with db.transaction(write=False) as conn:  # the pool still works
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()


async def test_sqlite_writers_queue_instead_of_failing(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    db = Database(url, pool_size=8)
    await db.migrate()

    async def write(i: int) -> None:
        async with db.transaction() as conn:
            await conn.execute(
                insert(audit_chain_heads),
                {"subject_id": f"s{i}", "seq": 1, "hash": "h", "updated_at_ms": i},
            )
            await asyncio.sleep(0.01)  # hold the write lock while others wait for it

    try:
        await asyncio.gather(*(write(i) for i in range(20)))
        async with db.transaction(write=False) as conn:
            count = len((await conn.scalars(select(audit_chain_heads.c.subject_id))).all())
        assert count == 20
    finally:
        await db.dispose()


async def test_an_unreachable_server_is_retryable() -> None:
    from streams.testing.processes import free_port

    db = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none", timeout_s=5)
    try:
        with pytest.raises(Retryable):
            async with db.transaction() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await db.dispose()


def test_the_default_database_is_a_file_under_streams_home(tmp_path: object) -> None:
    from pathlib import Path

    db = Database.from_settings(StoreSettings(home=Path(str(tmp_path))))
    assert db.dialect == "sqlite" and db.describe().endswith(f"{tmp_path}/streams.db")
