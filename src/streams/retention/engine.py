"""Run one retention policy in bounded, resumable batches.

Each batch is one short transaction: select at most ``batch_size`` candidate keys (ordered,
so a redelivery picks the same rows), apply the rule's action to exactly those keys and add
the counts to the run's row in ``retention_runs`` -- in the same transaction. A crash rolls
back the batch and its counts together, so a second delivery of the same tick (same
``run_id``) continues where the first stopped and the totals never double-count; a rule
whose row says ``done`` is not run again. No statement touches more than one batch of rows,
so no table is locked for longer than one batch.

Dry-run counts the candidates of every rule in read-only transactions and writes nothing
(not even ``retention_runs``). Archive batches are written and verified (``archive``)
before the transaction that marks or deletes them; notices are published (``notify``,
deterministic event ids) before the transaction that marks them sent.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.errors import ConfigError
from streams.retention import archive
from streams.retention.rules import Condition, RetentionConfig, Rule
from streams.store.database import Database
from streams.store.schema import retention_runs

log = logging.getLogger(__name__)

COUNTS = ("deleted", "archived", "anonymized", "notified", "children_anonymized", "files")
Notify = Callable[[Rule, Sequence[dict[str, Any]], int], Awaitable[None]]


async def _no_notify(rule: Rule, rows: Sequence[dict[str, Any]], tick_ms: int) -> None:
    raise ConfigError(f"rule {rule.name}: notices need a publisher (none configured)")


@dataclass
class RuleReport:
    rule: str
    why: str
    action: str
    matched: int = 0  # dry-run: rows (or files) that would be acted on
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    batches: int = 0
    longest_batch_s: float = 0.0


@dataclass
class RunReport:
    run_id: str
    policy: str
    tick_ms: int
    dry_run: bool
    rules: list[RuleReport]

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(COUNTS, 0)
        for r in self.rules:
            for k, v in r.counts.items():
                out[k] += v
        return out


def _value(value: Any, tick_ms: int) -> Any:
    return tick_ms if value == "{tick_ms}" else value


class RetentionEngine:
    def __init__(
        self,
        db: Database,
        config: RetentionConfig,
        *,
        archive_dir: Path | None = None,
        notify: Notify = _no_notify,
        wall_s: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.config = config
        self.archive_dir = archive_dir
        self.notify = notify
        self.wall_s = wall_s
        self._tables: dict[str, sa.Table] = {}

    # --- tables and conditions -----------------------------------------------------------

    async def _table(self, name: str) -> sa.Table:
        found = self._tables.get(name)
        if found is None:
            md = sa.MetaData()
            async with self.db.transaction(write=False) as conn:
                try:
                    found = await conn.run_sync(lambda c: sa.Table(name, md, autoload_with=c))
                except sa.exc.NoSuchTableError:
                    raise ConfigError(f"retention: no table {name!r} in the database") from None
            self._tables[name] = found
        return found

    @staticmethod
    def _col(table: sa.Table, name: str, rule: Rule) -> sa.ColumnElement[Any]:
        if name not in table.c:
            raise ConfigError(f"retention rule {rule.name}: no column {name!r} in {table.name}")
        return table.c[name]

    def _cond(self, t: sa.Table, c: Condition, rule: Rule, tick_ms: int) -> Any:
        col = self._col(t, c.column, rule)
        if c.op == "eq":
            return col == c.value
        if c.op == "ne":
            return col != c.value
        if c.op == "is_null":
            return col.is_(None)
        if c.op == "not_null":
            return col.is_not(None)
        if c.op == "older_than":
            return col < tick_ms - c.duration_ms
        return col >= tick_ms - c.duration_ms

    def _candidates(self, t: sa.Table, rule: Rule, tick_ms: int) -> list[Any]:
        assert rule.timestamp_column is not None
        out: list[Any] = [self._col(t, rule.timestamp_column, rule) < tick_ms - rule.older_than_ms]
        out += [self._cond(t, c, rule, tick_ms) for c in rule.where]
        for c in rule.keep:  # a NULL comparison keeps nothing: CASE makes it false
            out.append(sa.case((self._cond(t, c, rule, tick_ms), 1), else_=0) == 0)
        if rule.mark_column and not rule.then_delete:
            out.append(self._col(t, rule.mark_column, rule).is_(None))
        holds = sorted(self.config.legal_holds)
        if holds and rule.subject_column:
            subject = self._col(t, rule.subject_column, rule)
            out.append(sa.or_(subject.is_(None), subject.not_in(holds)))
        return out

    # --- runs ------------------------------------------------------------------------------

    async def run(
        self,
        policy: str,
        *,
        run_id: str,
        tick_ms: int,
        dry_run: bool = False,
        batch_size: int | None = None,
    ) -> RunReport:
        """Run (or, ``dry_run``, count) every rule of ``policy`` for the tick ``tick_ms``."""
        rules = self.config.policy(policy)
        report = RunReport(run_id, policy, tick_ms, dry_run, [])
        for rule in rules:
            rr = RuleReport(rule.name, rule.why, rule.action)
            report.rules.append(rr)
            size = rule.batch_size or batch_size or self.config.batch_size
            if rule.action == "files":
                await self._files(rule, rr, run_id, policy, tick_ms, dry_run, size)
                continue
            table = await self._table(rule.table or "")
            if dry_run:
                async with self.db.transaction(write=False) as conn:
                    stmt = sa.select(sa.func.count()).select_from(table)
                    stmt = stmt.where(*self._candidates(table, rule, tick_ms))
                    rr.matched = int((await conn.execute(stmt)).scalar_one())
                continue
            if await self._resume(rr, run_id, policy):
                continue
            while await self._batch(table, rule, rr, run_id, policy, tick_ms, size):
                pass
        return report

    async def _resume(self, rr: RuleReport, run_id: str, policy: str) -> bool:
        """Create the run row, or load its counts; True when the rule already finished."""
        r = retention_runs
        async with self.db.transaction() as conn:
            row = (
                (await conn.execute(sa.select(r).where(r.c.run_id == run_id, r.c.rule == rr.rule)))
                .mappings()
                .first()
            )
            if row is None:
                await conn.execute(
                    sa.insert(r).values(
                        run_id=run_id,
                        rule=rr.rule,
                        policy=policy,
                        status="running",
                        batches=0,
                        started_at_ms=int(self.wall_s() * 1000),
                        **dict.fromkeys(COUNTS, 0),
                    )
                )
                return False
        rr.counts = {k: int(row[k]) for k in COUNTS}
        rr.batches = int(row["batches"])
        return bool(row["status"] == "done")

    async def _record(
        self, conn: AsyncConnection, rr: RuleReport, run_id: str, add: dict[str, int], done: bool
    ) -> None:
        r = retention_runs
        values: dict[str, Any] = {k: r.c[k] + n for k, n in add.items()}
        if done:
            values.update(status="done", finished_at_ms=int(self.wall_s() * 1000))
        else:
            values["batches"] = r.c.batches + 1
        await conn.execute(
            sa.update(r).where(r.c.run_id == run_id, r.c.rule == rr.rule).values(**values)
        )

    async def _batch(
        self,
        t: sa.Table,
        rule: Rule,
        rr: RuleReport,
        run_id: str,
        policy: str,
        tick_ms: int,
        size: int,
    ) -> bool:
        """One bounded batch; False once the rule has no candidates left (marked done)."""
        key = self._col(t, rule.key, rule)
        pick = sa.select(t).where(*self._candidates(t, rule, tick_ms)).order_by(key).limit(size)
        prepared: list[dict[str, Any]] | None = None
        if rule.action in ("archive", "notice"):  # side effect first, outside the transaction
            async with self.db.transaction(write=False) as conn:
                prepared = [dict(m) for m in (await conn.execute(pick)).mappings()]
            if prepared:
                await self._before_commit(rule, prepared, run_id, policy, rr, tick_ms)
        started = time.perf_counter()
        async with self.db.transaction() as conn:
            if prepared is None:
                keys = list(
                    (
                        await conn.execute(
                            sa.select(key)
                            .where(*self._candidates(t, rule, tick_ms))
                            .order_by(key)
                            .limit(size)
                        )
                    ).scalars()
                )
            else:  # only rows still candidates (and archived/noticed above)
                wanted = [r[rule.key] for r in prepared]
                keys = (
                    list(
                        (
                            await conn.execute(
                                sa.select(key).where(
                                    key.in_(wanted), *self._candidates(t, rule, tick_ms)
                                )
                            )
                        ).scalars()
                    )
                    if wanted
                    else []
                )
            if not keys:
                await self._record(conn, rr, run_id, {}, done=True)
                return False
            add = await self._apply(conn, t, rule, key, keys, tick_ms)
            await self._record(conn, rr, run_id, add, done=False)
        rr.longest_batch_s = max(rr.longest_batch_s, time.perf_counter() - started)
        rr.batches += 1
        for k, n in add.items():
            rr.counts[k] += n
        return True

    async def _before_commit(
        self,
        rule: Rule,
        rows: list[dict[str, Any]],
        run_id: str,
        policy: str,
        rr: RuleReport,
        tick_ms: int,
    ) -> None:
        if rule.action == "notice":
            await self.notify(rule, rows, tick_ms)
            return
        if self.archive_dir is None:
            raise ConfigError(f"rule {rule.name}: archive needs STREAMS_RETENTION_ARCHIVE_DIR")
        path = archive.archive_path(self.archive_dir, policy, run_id, rule.name, rr.batches + 1)
        archive.write_verified(path, rows, rule.key)

    async def _apply(
        self,
        conn: AsyncConnection,
        t: sa.Table,
        rule: Rule,
        key: Any,
        keys: list[Any],
        tick_ms: int,
    ) -> dict[str, int]:
        n = len(keys)
        if rule.action == "delete":
            add = {"deleted": n}
            for child in rule.children:
                ct = await self._child_table(conn, child.table)
                fk = self._col(ct, child.foreign_key, rule)
                values = {c: _value(v, tick_ms) for c, v in child.set.items()}
                res = await conn.execute(sa.update(ct).where(fk.in_(keys)).values(**values))
                add["children_anonymized"] = res.rowcount
            await conn.execute(sa.delete(t).where(key.in_(keys)))
            return add
        if rule.action == "archive":
            if rule.then_delete:
                await conn.execute(sa.delete(t).where(key.in_(keys)))
                return {"archived": n, "deleted": n}
            assert rule.mark_column
            await conn.execute(
                sa.update(t).where(key.in_(keys)).values({rule.mark_column: tick_ms})
            )
            return {"archived": n}
        values = {c: _value(v, tick_ms) for c, v in rule.set.items()}
        assert rule.mark_column
        values[rule.mark_column] = tick_ms
        if rule.action == "anonymize":
            await conn.execute(sa.update(t).where(key.in_(keys)).values(**values))
            return {"anonymized": n}
        await conn.execute(sa.update(t).where(key.in_(keys)).values({rule.mark_column: tick_ms}))
        return {"notified": n}

    async def _child_table(self, conn: AsyncConnection, name: str) -> sa.Table:
        found = self._tables.get(name)
        if found is None:
            md = sa.MetaData()
            found = await conn.run_sync(lambda c: sa.Table(name, md, autoload_with=c))
            self._tables[name] = found
        return found

    # --- files -------------------------------------------------------------------------------

    async def _files(
        self,
        rule: Rule,
        rr: RuleReport,
        run_id: str,
        policy: str,
        tick_ms: int,
        dry_run: bool,
        size: int,
    ) -> None:
        assert rule.directory is not None
        cutoff_s = (tick_ms - rule.older_than_ms) / 1000
        old: list[Path] = []
        try:
            entries = sorted(os.scandir(rule.directory), key=lambda e: e.name)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if (
                entry.is_file(follow_symlinks=False)
                and fnmatch.fnmatch(entry.name, rule.pattern)
                and entry.stat(follow_symlinks=False).st_mtime < cutoff_s
            ):
                old.append(Path(entry.path))
        if dry_run:
            rr.matched = len(old)
            return
        if await self._resume(rr, run_id, policy):
            return
        for i in range(0, len(old), size):
            removed = 0
            for path in old[i : i + size]:
                try:
                    path.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass  # removed by the delivery that crashed (counted there, or not at all)
            async with self.db.transaction() as conn:
                await self._record(conn, rr, run_id, {"files": removed}, done=False)
            rr.counts["files"] += removed
            rr.batches += 1
        async with self.db.transaction() as conn:
            await self._record(conn, rr, run_id, {}, done=True)
