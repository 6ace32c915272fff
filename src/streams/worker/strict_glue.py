"""Strict per-key order carried out (``worker/strict.py`` decides, this module acts).

``StrictProcessor`` stands in front of a strict family's ``Processor`` (the lanes call its
``process``): a main-topic record is run, parked (left unfinished: its handler slot is free
at once) or spilled to the parking topic, as ``KeyBlocks`` says; every outcome is fed back
(``finish_routed`` is the ``Router``'s hook: a retry or DLQ copy is acknowledged, the hold
is written to the ``<family>.holds`` table, and only once that write is acknowledged is the
source record acked). Parked records a release frees go back to the lanes (``submit``) and
arrive here again in order; a spilled key's records are read back from the parking topic by
a drain task per key, which runs them one after another through the processor.

After an assignment the holds of each partition are read back from the table once faust has
recovered it (``load``, from the runtime), or when the partition's first record arrives if
that comes first; a hold whose head the idempotency ledger has done is released then (and a
released key's spill is drained even if no record of its partition ever arrives again). On
revoke (``revoke``), parked records are forgotten unfinished and drains are cancelled: the
next owner reads both again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

from streams.catalog import Family
from streams.core import headers as h
from streams.core.idempotency import event_hash
from streams.core.planner import DeadLetter, Retry
from streams.worker.changelog import ChangelogWriter
from streams.worker.ledger import Ledger
from streams.worker.ordering import Entry, PartitionLog
from streams.worker.ports import Producer
from streams.worker.processor import Processor
from streams.worker.routing import Router
from streams.worker.strict import (
    PARK,
    RUN,
    Change,
    HoldRecord,
    KeyBlocks,
    PKey,
    Spill,
    hold_key,
    parse_hold_key,
)
from streams.worker.strict_drain import ReaderFactory

log = logging.getLogger(__name__)

SPILL_RETRY_BACKOFF_S = 0.5
SPILL_BEHIND = 1024  # records a parked one may hold in its partition's log before it spills
DRAINS = 4  # drains running at once per family (each reads with its own consumer)


def _finish(entry: Entry, plan: Retry | DeadLetter) -> None:
    entry.finish()


class _ParkedTP:
    """The topic-partition of drained records (their log is detached: nothing commits)."""

    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class StrictProcessor:
    """A strict family's record processor: ``KeyBlocks`` in front of its ``Processor``."""

    def __init__(
        self,
        inner: Processor,
        *,
        family: Family,
        main_topic: str,
        parked_topic: str,
        writer: ChangelogWriter,
        store: Any,
        ledger: Ledger,
        producer: Producer,
        reader: ReaderFactory,
        on_parked: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.inner = inner
        self.family = inner.family
        self._main = main_topic
        self._parked_topic = parked_topic
        self.writer = writer
        self._store = store
        self._ledger = ledger
        self._producer = producer
        self._reader = reader
        self._on_parked = on_parked
        self.blocks: KeyBlocks[Entry] = KeyBlocks(
            max_parked=family.max_parked, hold_dead=family.on_dead_letter == "hold"
        )
        self.submit: Callable[[Sequence[Entry]], None] = lambda entries: None  # the lanes'
        self._routed: set[int] = set()  # ids of entries whose failure was just routed
        self._loaded: set[int] = set()  # partitions whose holds were read back
        self._spilling: dict[PKey, int] = {}  # spills on their way, per key
        self._last_spilled: dict[PKey, int] = {}  # parking offset of a key's latest spill
        self._drains: dict[PKey, asyncio.Task[None]] = {}
        self._drain_slots = asyncio.Semaphore(DRAINS)
        self._spill_locks: dict[PKey, asyncio.Lock] = {}  # one key's spills, in order
        self._drain_logs: dict[int, PartitionLog] = {}
        self._ack_routed: Callable[[Entry, Retry | DeadLetter], None] = _finish

    def attach(self, router: Router) -> None:
        """Stand in ``router``'s ack of routed records: its own ack runs once the key's hold
        is durable."""
        self._ack_routed = router.finish_routed
        router.finish_routed = self.finish_routed

    # --- assignment ---------------------------------------------------------------------

    def forget(self, tps: Iterable[Any]) -> None:
        """The rebalance gives ``tps`` up: parked records of their main-topic partitions are
        forgotten (unfinished) and their drains cancelled."""
        self._revoke({tp.partition for tp in tps if tp.topic == self._main})

    def _revoke(self, partitions: set[int]) -> None:
        self.blocks.drop(partitions)
        for pkey in [k for k in self._drains if k[0] in partitions]:
            self._drains.pop(pkey).cancel()
        for p in partitions:
            plog = self._drain_logs.pop(p, None)
            if plog is not None:
                plog.close()
        for d in (self._spilling, self._last_spilled):
            for pkey in [k for k in d if k[0] in partitions]:
                del d[pkey]
        self._loaded -= partitions
        self._on_parked(self.blocks.parked)

    def load(self, partitions: Iterable[int]) -> None:
        """Read back the holds of ``partitions`` not read yet (their table is recovered)."""
        for partition in partitions:
            if partition not in self._loaded:
                self._load(partition)

    def _load(self, partition: int) -> None:
        """Read back the holds of ``partition`` (once per assignment)."""
        self._loaded.add(partition)
        prefix = b"%d:" % partition
        keys = list(self._store.keys())
        restored = [0, 0]  # head pending, head done
        for table_key in (k for k in keys if k.startswith(prefix)):
            try:
                pkey = parse_hold_key(table_key)
                record = HoldRecord.decode(self._store[table_key])
            except (ValueError, TypeError):
                log.warning("%s: ignoring a malformed hold %r", self.family.name, table_key[:60])
                continue
            done = record.head is not None and self._ledger.seen(partition, event_hash(record.head))
            self._apply(pkey, self.blocks.restore(pkey, record, head_done=done))
            restored[done] += 1
        if any(restored):
            log.info(
                "%s[%d]: %d held key(s) read back, %d released (their head is done)",
                self.family.name,
                partition,
                restored[False],
                restored[True],
            )

    # --- the lanes' entry point -----------------------------------------------------------

    async def process(self, entry: Entry) -> None:
        """Run, park or spill ``entry`` (a main-topic record), or run it (any other topic);
        then feed its outcome back. Never raises (but lets cancellation through)."""
        partition = entry.partition
        if partition not in self._loaded:
            self._load(partition)
        pkey = (partition, entry.key or b"")
        event_id = h.decode(entry.headers).get(h.EVENT_ID, "")
        if entry.topic == self._main:
            decision = self.blocks.arrive(pkey, event_id, entry.offset, entry)
        else:
            decision = RUN
        if decision == RUN:
            await self._run(pkey, event_id, entry)
        elif decision == PARK:
            self._on_parked(self.blocks.parked)
        elif isinstance(decision, Spill):
            await self._spill(pkey, decision.items)
        self._apply(pkey, self.blocks.ran(pkey))
        if entry.topic == self._main and len(entry.log) >= SPILL_BEHIND:
            await self._evict(entry.log)

    async def _evict(self, plog: PartitionLog) -> None:
        """The partition's oldest unfinished record is parked and holds ``SPILL_BEHIND``
        records behind it (in memory, and its commit): its key spills."""
        head = plog.head
        if head is None:
            return
        pkey = (head.partition, head.key or b"")
        spill = self.blocks.evict(pkey)
        if spill is not None:
            await self._spill(pkey, spill.items)

    async def _run(self, pkey: PKey, event_id: str, entry: Entry) -> None:
        try:
            await self.inner.process(entry)
        finally:
            routed = id(entry) in self._routed
            self._routed.discard(id(entry))
        if routed:
            return
        if entry.log.stopping or entry.log.closed:
            return  # revoked meanwhile: its outcome is the next owner's
        if event_id and self._ledger.seen(entry.partition, event_hash(event_id)):
            # done (or cancelled, suppressed, a duplicate): not a record acked for another
            # reason (a redelivered record already routed is no success of its event)
            self._apply(pkey, self.blocks.finished(pkey, event_id))

    def finish_routed(self, entry: Entry, plan: Retry | DeadLetter) -> None:
        """The ``Router``'s hook: ``entry``'s retry or DLQ copy is acknowledged; ack it once
        the hold this changes is durable."""
        self._routed.add(id(entry))
        if entry.log.closed:
            return  # given up meanwhile: nothing to ack, the next owner reads it again
        event_id = plan.headers.get(h.EVENT_ID) or h.decode(entry.headers).get(h.EVENT_ID, "")
        pkey = (entry.partition, entry.key or b"")
        change = self.blocks.routed(pkey, event_id, dead=isinstance(plan, DeadLetter))
        self._apply(pkey, change, then=partial(self._ack_routed, entry, plan))

    def _apply(
        self, pkey: PKey, change: Change[Entry], then: Callable[[], None] | None = None
    ) -> None:
        """Carry out ``change``; ``then`` once its table write is durable (or at once)."""
        if change.write:
            value = change.record.encode() if change.record is not None else None
            self.writer.put(pkey[0], hold_key(*pkey), value, then)
        elif then is not None:
            then()
        if change.run:
            self._on_parked(self.blocks.parked)
            self.submit(change.run)
        if change.drain_from is not None and pkey not in self._drains:
            task = asyncio.get_running_loop().create_task(
                self._drain(pkey, change.drain_from), name=f"strict.drain.{self.family.name}"
            )
            self._drains[pkey] = task

    # --- the parking topic ----------------------------------------------------------------

    async def _spill(self, pkey: PKey, items: Sequence[Entry]) -> None:
        """Produce ``items`` (in order) to the parking topic and ack each once it is there
        (the first one's once where the spill starts is durable too)."""
        self._on_parked(self.blocks.parked)
        self._spilling[pkey] = self._spilling.get(pkey, 0) + 1
        lock = self._spill_locks.get(pkey)
        if lock is None:
            lock = self._spill_locks[pkey] = asyncio.Lock()
        try:
            async with lock:  # taken in the order the spills were decided (FIFO)
                await self._send_all(pkey, items)
        finally:
            left = self._spilling.get(pkey, 1) - 1
            if left > 0:
                self._spilling[pkey] = left
            else:
                self._spilling.pop(pkey, None)
                if not lock.locked():
                    self._spill_locks.pop(pkey, None)

    async def _send_all(self, pkey: PKey, items: Sequence[Entry]) -> None:
        for item in items:
            sent = await self._send(item)
            if sent is None:
                return  # revoked: left unfinished, the next owner reads them again
            offset = int(getattr(sent, "offset", -1))
            self._last_spilled[pkey] = max(offset, self._last_spilled.get(pkey, -1))
            self._apply(pkey, self.blocks.spilled_at(pkey, offset), then=item.finish)

    async def _send(self, entry: Entry) -> Any:
        """The unchanged record to the parking topic, same partition number; its metadata,
        or None once the source partition is given up."""
        while not (entry.log.closed or entry.log.stopping):
            try:
                fut: Awaitable[Any] = await self._producer.send(
                    self._parked_topic,
                    entry.key,
                    entry.value,
                    entry.partition,
                    None,
                    list(entry.headers or []),
                )
                return await fut
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: parking a record failed (%r); retrying", self.family.name, exc)
                await asyncio.sleep(SPILL_RETRY_BACKOFF_S)
        return None

    async def _drain(self, pkey: PKey, start: int) -> None:
        """Run the key's parking records from ``start`` in order, until they are all run
        (the key is free) or one fails (the key is held again)."""
        partition = pkey[0]
        plog = self._drain_logs.get(partition)
        if plog is None:
            plog = self._drain_logs[partition] = PartitionLog(
                _ParkedTP(self._parked_topic, partition)
            )
        async with self._drain_slots:
            await self._drain_from(pkey, plog, start)

    async def _drain_from(self, pkey: PKey, plog: PartitionLog, start: int) -> None:
        partition, key = pkey
        reader = self._reader(self._parked_topic, partition, start)
        next_offset = start
        try:
            while True:
                try:
                    records, high = await reader.read()
                except Exception as exc:  # broker trouble: read again
                    log.warning("%s: reading parked records failed (%r)", self.family.name, exc)
                    await asyncio.sleep(SPILL_RETRY_BACKOFF_S)
                    continue
                for record in records:
                    if record.offset < next_offset:
                        continue
                    next_offset = record.offset + 1
                    if (record.key or b"") != key:
                        continue
                    entry = plog.add(record)
                    event_id = h.decode(entry.headers).get(h.EVENT_ID, "")
                    await self._run(pkey, event_id, entry)
                    if plog.closed:
                        return
                    if self.blocks.held(pkey):  # it failed: the key waits for it now
                        self._apply(pkey, self.blocks.drained(pkey, next_offset))
                        return
                caught_up = next_offset >= high and not self._spilling.get(pkey)
                if caught_up and next_offset > self._last_spilled.get(pkey, -1):
                    self._last_spilled.pop(pkey, None)
                    self._apply(pkey, self.blocks.drained(pkey, None))
                    return
        finally:
            if self._drains.get(pkey) is asyncio.current_task():
                del self._drains[pkey]
            with contextlib.suppress(Exception):
                await reader.close()
