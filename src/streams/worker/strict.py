"""Strict per-key order (``ordering: strict``): which event of a key may run, which waits.

A family's events of one key normally run in order on the main topic, but a failed one goes
to a retry tier and later events of its key overtake it. With ``ordering: strict`` the key is
*held* from the moment its event (the *head*) is routed to a retry tier until the head
succeeds (or, ``on_dead_letter: release``, is dead-lettered; ``hold`` keeps the key held
until the head's redrive succeeds). Later main-topic events of a held key are *parked*:
not run, not acked, and not in anyone's way: they leave their handler slot at once, so the
partition's other keys flow. Once the key is released its parked events run, in offset order,
before any later event of the key.

"Not acked past" and "not blocking other keys" pull against each other: a parked event
cannot be acked, so its partition's committed offset stops at the first parked offset while
the records after it run and finish. Two places hold parked events:

- **memory** (up to ``max_parked`` per family and worker): the entries stay unfinished in
  their ``PartitionLog``; the commit waits at the oldest one, and a restart redelivers it and
  everything after it (the idempotency ledger skips what was done meanwhile). The records
  finished behind it stay in the log too (until the prefix is finished), so a parked entry
  that holds back more than ``SPILL_BEHIND`` records of its partition spills its key
  (``evict``, ``worker/strict_glue.py``): memory, the commit lag and the redelivery after a
  restart stay bounded, and the intake's backpressure never stops the partition for it;
- **the parking topic** ``<family>.parked`` past the bound: the key *spills*, its parked
  entries are produced there (key, value, headers unchanged, same partition number) in order
  and acked once the broker has them, so commits move on. From then on every later event of
  the key goes there too until the parking topic has been drained for the key (else a later
  event would run before an earlier parked one); the drain reads the key's records back from
  the offset of its first spill, in order.

A hold survives a restart: the ``<family>.holds`` table (changelogged, per partition) keeps
each held key's head event id, whether it was dead-lettered, and where its spill starts. The
hold is written, and acknowledged by the broker, *before* the head's source record is acked
(the head's retry or DLQ copy is already durable then), so a redelivered later event of the
key is parked again instead of run. A head found done in the idempotency ledger after a
restart has released its key (its tombstone may not have been written); a dead-lettered
head's release (``release``) is made durable before its record is acked, like the hold.

This module is the state machine only (no IO, no asyncio): ``KeyBlocks`` answers what to do
with an arriving event (``RUN``, ``PARK``, or a ``Spill``) and what an outcome changes (a
``Change``: the hold record to write, the parked items to run again, a drain to start). The
glue (``worker/strict_glue.py``) carries those out around the family's ``Processor``.

Keys are ``(partition, message key)``; items are opaque (the worker's ``Entry``), compared
by identity; ``order`` is the item's main-topic offset.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
PKey = tuple[int, bytes]  # (partition, message key; b"" for none)

RUN = "run"
PARK = "park"


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """What the holds table keeps of a blocked key (no record: the key is free).

    ``head`` None: released, but its spill is still to be drained from ``parked_from``."""

    head: str | None  # event id of the event the key waits for
    dead: bool = False  # the head was dead-lettered (on_dead_letter: hold)
    parked_from: int | None = None  # parking-topic offset of the key's first spilled event

    def encode(self) -> bytes:
        return json.dumps(
            {"head": self.head, "dead": self.dead, "parked_from": self.parked_from},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> HoldRecord:
        """ValueError on anything but a record ``encode`` wrote."""
        try:
            raw = json.loads(data)
            head, dead, parked_from = raw["head"], raw["dead"], raw["parked_from"]
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a hold record: {data[:60]!r}") from exc
        valid = (
            (head is None or isinstance(head, str))
            and isinstance(dead, bool)
            and (parked_from is None or (isinstance(parked_from, int) and parked_from >= 0))
            and (head is not None or parked_from is not None)
        )
        if not valid:
            raise ValueError(f"not a hold record: {data[:60]!r}")
        return cls(head, dead, parked_from)


def hold_key(partition: int, key: bytes) -> bytes:
    """The holds table's key of ``key`` on ``partition`` (unique across partitions)."""
    return b"%d:%s" % (partition, key)


def parse_hold_key(table_key: bytes) -> PKey:
    """``hold_key``'s inverse; ValueError for another shape."""
    head, sep, key = table_key.partition(b":")
    if not sep or not head.isdigit():
        raise ValueError(f"not a hold key: {table_key[:60]!r}")
    return int(head), key


@dataclass(frozen=True, slots=True)
class Spill(Generic[T]):
    """Produce ``items`` to the parking topic in this order, then ack them."""

    items: tuple[T, ...]


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """What a transition asks of the glue: ``write`` the key's hold ``record`` to the table
    (``None``: a tombstone), ``run`` parked items again (in order), start a drain of the
    parking topic at ``drain_from``."""

    write: bool = False
    record: HoldRecord | None = None
    run: tuple[T, ...] = ()
    drain_from: int | None = None


@dataclass(slots=True)
class _Block(Generic[T]):
    head: str | None  # None: released; its parked items are running again (or draining)
    dead: bool = False
    queue: list[tuple[int, T]] = field(default_factory=list)  # parked in memory, by order
    released: dict[int, T] = field(default_factory=dict)  # id -> item sent to run again
    spilled: bool = False  # later events go to the parking topic
    parked_from: int | None = None
    draining: bool = False

    def record(self) -> HoldRecord | None:
        if self.head is None and self.parked_from is None:
            return None
        return HoldRecord(self.head, self.dead, self.parked_from)


class KeyBlocks(Generic[T]):
    """The blocked keys of one family on one worker, and their parked events.

    A key is *held* (a head is pending), *releasing* (its parked items run again, in order;
    a later event arriving meanwhile is parked behind them), *draining* (its spill is read
    back from the parking topic; later events keep spilling) or free (no block)."""

    def __init__(self, *, max_parked: int, hold_dead: bool) -> None:
        """``max_parked``: parked items kept in memory (all keys); past it a key spills.
        ``hold_dead``: a dead-lettered head keeps its key held (``on_dead_letter: hold``)."""
        self._max_parked = max_parked
        self._hold_dead = hold_dead
        self._blocks: dict[PKey, _Block[T]] = {}
        self._parked = 0

    # --- views ----------------------------------------------------------------------------

    @property
    def parked(self) -> int:
        """Items parked in memory now."""
        return self._parked

    def held(self, pkey: PKey) -> bool:
        block = self._blocks.get(pkey)
        return block is not None and block.head is not None

    def head(self, pkey: PKey) -> str | None:
        block = self._blocks.get(pkey)
        return block.head if block is not None else None

    def blocked(self) -> int:
        """Keys held, releasing or draining."""
        return len(self._blocks)

    def draining(self, pkey: PKey) -> bool:
        block = self._blocks.get(pkey)
        return block is not None and block.draining

    def spilled(self, pkey: PKey) -> bool:
        block = self._blocks.get(pkey)
        return block is not None and block.spilled

    # --- an event arrives on the main topic -------------------------------------------------

    def arrive(self, pkey: PKey, event_id: str, order: int, item: T) -> str | Spill[T]:
        """A main-topic event of ``pkey``: ``RUN`` it, ``PARK`` it (keep it unfinished), or
        ``Spill`` (produce the spill's items, this one last, to the parking topic)."""
        block = self._blocks.get(pkey)
        if block is None:
            return RUN
        again = block.released.pop(id(item), None) is not None
        if block.head is None and again:
            if not block.queue or order < block.queue[0][0]:
                return RUN  # a parked event sent to run again, its turn
        elif block.head is not None and event_id == block.head:
            return RUN  # the head itself (its redrive, or redelivered after a restart)
        if block.spilled:
            return Spill((item,))
        if self._parked < self._max_parked:
            bisect.insort(block.queue, (order, item), key=_order)
            self._parked += 1
            return PARK
        spilled = (*(i for _, i in block.queue), item)
        self._parked -= len(block.queue)
        block.queue.clear()
        block.spilled = True
        return Spill(spilled)

    def evict(self, pkey: PKey) -> Spill[T] | None:
        """Spill the key's memory-parked items now (they hold back too much of their
        partition's log); None when it has none. Its later events spill too."""
        block = self._blocks.get(pkey)
        if block is None or not block.queue:
            return None
        items = tuple(i for _, i in block.queue)
        self._parked -= len(block.queue)
        block.queue.clear()
        block.spilled = True
        return Spill(items)

    def spilled_at(self, pkey: PKey, offset: int) -> Change[T]:
        """The key's first spilled record landed at ``offset`` of the parking topic: where
        its spill starts is written before the spilled events are acked. A key released
        while that first spill was on its way starts its drain now."""
        block = self._blocks.get(pkey)
        if block is None or block.parked_from is not None:
            return Change()
        block.parked_from = offset
        drain = offset if block.head is None and block.draining else None
        return Change(write=True, record=block.record(), drain_from=drain)

    # --- outcomes -------------------------------------------------------------------------

    def routed(self, pkey: PKey, event_id: str, *, dead: bool) -> Change[T]:
        """``event_id`` of ``pkey`` went to a retry tier (``dead`` False) or the DLQ. The
        ``write`` must be durable before the event's source record is acked."""
        block = self._blocks.get(pkey)
        if block is not None and block.head is not None and block.head != event_id:
            return Change()  # another event holds the key (a leftover retry copy): keep it
        if dead and not self._hold_dead:
            if block is None or block.head is None:
                return Change()  # nothing waits for it
            return self._release(pkey, block)
        if block is None:
            block = self._blocks[pkey] = _Block(event_id)
        elif block.head is None:  # failed while its parked successors ran again
            block.head = event_id
            block.draining = False
        block.dead = dead
        return Change(write=True, record=block.record())

    def finished(self, pkey: PKey, event_id: str) -> Change[T]:
        """``event_id`` of ``pkey`` succeeded (done, a duplicate, cancelled, suppressed)."""
        block = self._blocks.get(pkey)
        if block is None or block.head != event_id:
            return Change()
        return self._release(pkey, block)

    def ran(self, pkey: PKey) -> Change[T]:
        """An event of ``pkey`` left the glue (ran to its outcome, parked or spilled): once
        the items a release sent to run again have all arrived, the next parked ones run,
        the drain starts, or the key is free."""
        block = self._blocks.get(pkey)
        if block is None or block.head is not None or block.released or block.draining:
            return Change()
        return self._release(pkey, block)

    def drained(self, pkey: PKey, next_offset: int | None) -> Change[T]:
        """The drain of ``pkey`` read all its parking records (``next_offset`` None), or
        stopped before ``next_offset`` because an event failed (the key is held again and
        its spill now starts there)."""
        block = self._blocks.get(pkey)
        if block is None:
            return Change()
        block.draining = False
        if next_offset is not None:
            block.parked_from = next_offset
            return Change(write=True, record=block.record())
        block.spilled = False
        block.parked_from = None
        if block.head is not None:
            return Change(write=True, record=block.record())
        after = self._release(pkey, block)  # the record said "drain from": it goes now
        return Change(write=True, record=after.record, run=after.run)

    def _release(self, pkey: PKey, block: _Block[T]) -> Change[T]:
        """The key waits for no head any more: its memory-parked items run again, else its
        spill is drained, else it is free."""
        had_head = block.head is not None
        block.head = None
        block.dead = False
        if block.released:  # items of an earlier release still to arrive: they come first
            return Change(write=had_head, record=block.record())
        if block.queue:
            items = tuple(i for _, i in block.queue)
            self._parked -= len(block.queue)
            block.queue.clear()
            block.released = {id(i): i for i in items}
            return Change(write=had_head, record=block.record(), run=items)
        if block.spilled:
            block.draining = True
            if block.parked_from is None:  # the first spill is on its way (``spilled_at``)
                return Change()
            return Change(write=had_head, record=block.record(), drain_from=block.parked_from)
        del self._blocks[pkey]
        return Change(write=had_head or block.parked_from is not None)

    # --- restart and revoke -----------------------------------------------------------------

    def restore(self, pkey: PKey, record: HoldRecord, *, head_done: bool) -> Change[T]:
        """A hold read back from the table after an assignment; ``head_done``: the ledger
        has the head done (its release was not written before the restart)."""
        if record.head is None or head_done:
            if record.parked_from is None:
                return Change(write=True)  # released: the tombstone was not written
            self._blocks[pkey] = _Block(
                None, spilled=True, parked_from=record.parked_from, draining=True
            )
            return Change(drain_from=record.parked_from)
        self._blocks[pkey] = _Block(
            record.head,
            dead=record.dead,
            spilled=record.parked_from is not None,
            parked_from=record.parked_from,
        )
        return Change()

    def drop(self, partitions: Iterable[int]) -> list[T]:
        """Forget the keys of ``partitions`` (revoked); returns their parked items (left
        unfinished: the next owner reads them again)."""
        gone = set(partitions)
        dropped: list[T] = []
        for pkey in [k for k in self._blocks if k[0] in gone]:
            block = self._blocks.pop(pkey)
            dropped.extend(i for _, i in block.queue)
            self._parked -= len(block.queue)
        return dropped


def _order(pair: tuple[int, object]) -> int:
    return pair[0]
