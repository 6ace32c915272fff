"""The rebalance and shutdown protocol that faust does not give us, and record admission.

On assignment: nothing is admitted until every assigned partition is sought to its committed
offset (or the log start when nothing is committed or the committed records were deleted)
and expected there. Every partition is sought explicitly: aiokafka seeks only to committed
offsets > 0 and otherwise keeps whatever fetch position it had, and a partition read (not
committed) by this worker, owned by another one in between and then handed back, resumed
*after* records that had been dropped unacked on revoke (a retry record held for an hour was
skipped, found by a test). Co-partitioning (main and retry tiers assigned alike) is checked.

On revoke (faust pauses fetching and clears agent buffers first): records waiting for their
due time or for their batch (``worker/batching.py``) are dropped unacked, running handlers
and running batches get ``drain_timeout_s`` to finish (then are cancelled), the
done-markers are flushed, the finished prefix of each partition is acked and committed, and
the partitions' state is forgotten. Shutdown does the same for every
partition after pausing them all.

Written against ``ConsumerPort`` (``compat.FaustConsumer`` in the worker) and the
``Sequencer``, which decides what is admitted and what is sought back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from typing import Protocol

from streams.core.topology import FamilyTopics
from streams.errors import TopologyError
from streams.metrics import Metrics
from streams.worker.commits import Committer
from streams.worker.ordering import PartitionLog
from streams.worker.sequencer import Sequencer, start_offset
from streams.worker.tp import TP

log = logging.getLogger(__name__)


class ConsumerPort(Protocol):
    """What the protocol needs of the consumer."""

    def pause(self, tps: Collection[TP]) -> None: ...
    def resume(self, tps: Collection[TP]) -> None: ...
    def assignment(self) -> set[TP]: ...
    async def commit_offsets(self, offsets: Mapping[TP, int]) -> bool: ...
    async def seek(self, offsets: Mapping[TP, int]) -> None: ...
    async def position(self, starts: Mapping[TP, int]) -> None: ...
    async def start_offsets(self, tps: Collection[TP]) -> dict[TP, tuple[int | None, int]]: ...
    def flow_active(self) -> bool: ...
    def stop_flow(self) -> None: ...


class LedgerPort(Protocol):
    def assign(self, partitions: set[int]) -> None: ...
    def revoke(self, partitions: set[int]) -> None: ...


class SchedulerPort(Protocol):
    def drop(self, tps: set[TP]) -> int: ...
    def repause(self) -> None: ...


class LanesPort(Protocol):
    async def wait_idle(self, tps: set[TP], timeout_s: float) -> bool: ...
    def cancel(self, tps: set[TP]) -> int: ...
    def saturated(self) -> bool: ...


class BatchesPort(Protocol):
    def drop(self, tps: set[TP]) -> int: ...
    async def wait_idle(self, tps: set[TP], timeout_s: float) -> bool: ...
    def cancel(self, tps: set[TP]) -> int: ...


class WriterPort(Protocol):
    async def flush(self, timeout_s: float | None = None) -> bool: ...


class FamilyPort(Protocol):
    """The parts of one family's runtime that a rebalance touches."""

    @property
    def name(self) -> str: ...
    @property
    def topics(self) -> FamilyTopics: ...
    @property
    def ledger(self) -> LedgerPort | None: ...
    @property
    def schedulers(self) -> Sequence[SchedulerPort]: ...
    @property
    def lanes(self) -> LanesPort: ...
    @property
    def batches(self) -> BatchesPort: ...
    @property
    def writers(self) -> Sequence[WriterPort]: ...


class Rebalancer:
    def __init__(
        self,
        *,
        consumer: ConsumerPort,
        sequencer: Sequencer,
        metrics: Metrics,
        drain_timeout_s: float,
        crash: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self.consumer = consumer
        self.sequencer = sequencer
        self.metrics = metrics
        self.drain_timeout_s = drain_timeout_s
        self._crash = crash
        self.committer = Committer(consumer.commit_offsets, consumer.assignment)
        # a partition's finished prefix advanced (the intake's backpressure listens)
        self.advanced: Callable[[TP], None] = lambda tp: None
        self.families: list[FamilyPort] = []
        self.by_topic: dict[str, FamilyPort] = {}  # our processed topics (not the DLQs)
        self.logs: dict[TP, PartitionLog] = {}
        self.assigned_once = False
        self.topology_errors: list[str] = []
        self._admission_event = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._seeks: set[asyncio.Task[None]] = set()  # seeks started without awaiting them
        # a partition of a family paused by the control plane: never resumed, re-paused
        # after an assignment (``worker/control.py``)
        self.holds: Callable[[TP], bool] = lambda tp: False
        # every assigned partition is positioned (the runtime freezes the heap, heap.py)
        self.on_positioned: Callable[[], object] = lambda: None
        # the intake drops batches of partitions given up
        self.forget: Callable[[set[TP]], None] = lambda tps: None

    def add_family(self, family: FamilyPort) -> None:
        self.families.append(family)
        for name in (family.topics.main, *family.topics.lane_topics, *family.topics.retries):
            self.by_topic[name] = family
            self.metrics.prime_topic(name)

    # --- admission ----------------------------------------------------------------------

    async def admission(self) -> None:
        """Wait while partitions are being (re)positioned after an assignment; records
        fetched meanwhile are held, and the in-sequence check sorts out stale ones."""
        seq = self.sequencer
        if not seq.positioned and not seq.draining:
            await self._admission_event.wait()

    def log_for(self, tp: TP, offset: int) -> PartitionLog | None:
        """The partition's log if the record at ``offset`` may be admitted (see
        ``worker/sequencer.py``), else None: the record stays unacked and is read again."""
        verdict = self.sequencer.admit(tp, offset)
        if not verdict.admitted:
            self.metrics.not_admitted.labels(tp.topic, verdict.reason).inc()
            if verdict.seek_to is not None:
                self._in_background(self.consumer.seek({tp: verdict.seek_to}))
            return None
        plog = self.logs.get(tp)
        if plog is None:
            plog = self.logs[tp] = PartitionLog(tp, self._advance)
        return plog

    async def commit_through(self, offsets: Mapping[TP, int]) -> bool:
        """Commit ``offsets`` now (``Committer.commit_through``)."""
        return await self.committer.commit_through(offsets)

    def _advance(self, tp: TP, next_offset: int) -> None:
        self.committer.advance(tp, next_offset)
        self.advanced(tp)

    def pause(self, tp: TP) -> None:
        self.consumer.pause({tp})

    def resume(self, tp: TP) -> None:
        """Resume fetching ``tp`` (if still ours) from its next expected offset."""
        if not self.sequencer.owns(tp) or self.holds(tp):
            return
        self.consumer.resume({tp})
        offset = self.sequencer.resume_offset(tp)
        if offset is not None:
            self._in_background(self.consumer.seek({tp: offset}))

    def _in_background(self, seek: Coroutine[object, object, None]) -> None:
        """Start ``seek`` from synchronous code, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(seek)
        self._seeks.add(task)
        task.add_done_callback(self._seeks.discard)

    # --- what faust throws away (compat/flow_control.py, compat/fetch.py) ---------------

    def on_discarded(self, lost: set[TP]) -> None:
        """faust cleared stream buffers holding records of ``lost``."""
        # a clear while flow is suspended is faust's revoke: the next assignment positions
        # every partition anyway
        if self.sequencer.discarded(lost) and self.consumer.flow_active():
            self._in_background(self.reseek_lost())

    async def on_withheld(self, withheld: Mapping[TP, int]) -> None:
        """A fetch returned records of partitions paused meanwhile (removed before faust saw
        them): seek ours back to the first of them."""
        ours = {tp: offset for tp, offset in withheld.items() if tp.topic in self.by_topic}
        if ours:
            for tp in ours:
                self.metrics.reseeks.labels(tp.topic, "paused").inc()
            await self.consumer.seek(ours)

    async def reseek_lost(self) -> None:
        offsets = self.sequencer.take_lost()
        if not offsets:
            return
        for tp in offsets:
            self.metrics.reseeks.labels(tp.topic, "cleared").inc()
        log.info(
            "faust discarded buffered records of %d partition(s); seeking back: %s",
            len(offsets),
            ", ".join(
                f"{tp.topic}[{tp.partition}]@{off}"
                for tp, off in sorted(offsets.items(), key=lambda i: (i[0].topic, i[0].partition))
            ),
        )
        await self.consumer.seek(offsets)

    # --- assignment ---------------------------------------------------------------------

    async def on_assigned(self, sender: object, assigned: set[TP], **kwargs: object) -> None:
        self._admission_event.clear()
        active = {tp for tp in assigned if tp.topic in self.by_topic}
        self.sequencer.assign(active)
        self.assigned_once = True
        problems = self._check_copartitioned(active)
        for family in self.families:
            for scheduler in family.schedulers:
                scheduler.repause()
        held = {tp for tp in active if self.holds(tp)}
        if held:
            self.consumer.pause(held)
        self.topology_errors = problems
        # the seeks run in the consumer thread, which is itself waiting for this handler:
        # if shutdown stops that thread meanwhile they never finish (a SIGTERM during a
        # rebalance hung until the shutdown deadline and exited without committing)
        if not await self._unless_stopping(self._position(active)):
            return
        self.sequencer.positioned_all()
        self.on_positioned()
        self._admission_event.set()
        await self._unless_stopping(self.reseek_lost())
        if problems:
            message = "co-partitioned assignment does not hold:\n" + "\n".join(problems)
            log.error(message)
            await self._crash(TopologyError(message))

    def _check_copartitioned(self, active: set[TP]) -> list[str]:
        """Problems with the assignment; the ledgers learn their main partitions."""
        by_topic: dict[str, set[int]] = {}
        for tp in active:
            by_topic.setdefault(tp.topic, set()).add(tp.partition)
        problems: list[str] = []
        for family in self.families:
            main = by_topic.get(family.topics.main, set())
            for name in (*family.topics.lane_topics, *family.topics.retries):
                got = by_topic.get(name, set())
                if got != main:
                    problems.append(
                        f"{family.name}: partitions {sorted(main)} of {family.topics.main} "
                        f"but {sorted(got)} of {name} are assigned here (co-partitioning broken)"
                    )
            if family.ledger is not None:
                family.ledger.assign(main)
        return problems

    async def _position(self, tps: set[TP]) -> None:
        """Seek every partition of ``tps`` to where it is read from, and expect it there."""
        if not tps:
            return
        found = await self.consumer.start_offsets(tps)
        starts = {tp: start_offset(*found[tp]) for tp in tps}
        self.sequencer.position(starts)
        await self.consumer.position(starts)
        log.info("positioned %d partition(s)", len(tps))

    async def _unless_stopping(self, work: Coroutine[object, object, None]) -> bool:
        """Await ``work`` unless shutdown starts first (then cancel it); True if it ran."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        log.info("shutdown started during a rebalance: partitions left unpositioned")
        return False

    # --- release ------------------------------------------------------------------------

    async def on_revoked(self, sender: object, revoked: set[TP], **kwargs: object) -> None:
        self.sequencer.unposition()
        self._admission_event.clear()
        await self.release(set(revoked), self.drain_timeout_s)

    async def release(self, tps: set[TP], timeout_s: float) -> None:
        """Give ``tps`` up: drop waiting records, let running ones finish (up to
        ``timeout_s``), make done-markers durable, ack the finished prefix and commit."""
        tps = {tp for tp in tps if tp.topic in self.by_topic}
        self.sequencer.release(tps)
        if not tps:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for tp in tps:
            plog = self.logs.get(tp)
            if plog is not None:
                plog.stopping = True  # queued records are not started any more
        self.forget(tps)
        dropped = sum(s.drop(tps) for family in self.families for s in family.schedulers)
        dropped += sum(family.batches.drop(tps) for family in self.families)
        for family in self.families:
            mine = {tp for tp in tps if self.by_topic[tp.topic] is family}
            if not mine:
                continue
            if not await family.lanes.wait_idle(mine, max(0.0, deadline - loop.time())):
                cancelled = family.lanes.cancel(mine)
                log.warning(
                    "%s: cancelled %d handler(s) past the drain deadline", family.name, cancelled
                )
            if not await family.batches.wait_idle(mine, max(0.0, deadline - loop.time())):
                family.batches.cancel(mine)
        for family in self.families:
            for writer in family.writers:
                await writer.flush(max(0.1, deadline - loop.time()))
        unacked = 0
        for tp in tps:
            plog = self.logs.pop(tp, None)
            if plog is not None:
                unacked += plog.close()
        for family in self.families:
            parts = {tp.partition for tp in tps if tp.topic == family.topics.main}
            if family.ledger is not None and parts:
                family.ledger.revoke(parts)
        await self.committer.commit()  # logs a failure: the next owner re-reads
        self.committer.forget(tps)
        log.info(
            "released %d partition(s): %d waiting dropped, %d left unacked",
            len(tps),
            dropped,
            unacked,
        )

    async def drain(self) -> None:
        """Shutdown: stop fetching, finish what runs (bounded), commit the finished prefix."""
        self.sequencer.drain()  # nothing new is admitted from here on
        self._stop_event.set()  # a rebalance in progress stops waiting for seeks
        self._admission_event.set()  # wake lanes holding a record: they leave it unacked
        try:
            assignment = self.consumer.assignment()
            self.consumer.pause(assignment)
        except Exception:
            assignment = self.sequencer.active
        self.consumer.stop_flow()
        await self.release(self.sequencer.active | assignment, self.drain_timeout_s)
