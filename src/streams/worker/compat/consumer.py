"""The worker's one typed view of faust's consumer (and of aiokafka beneath it).

Everything the worker asks of the consumer goes through ``FaustConsumer``: the public faust
calls, typed with ``worker.tp.TP``, and the few reads of private state (which partitions are
paused or have a full buffer, what sits in the stream buffers, diagnostics). ``install``
applies the workarounds of the sibling modules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Protocol, cast

import faust
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import ensure_aiokafka_TP
from faust.types import TP as FaustTP

from streams.worker.compat.fetch import snapshot_fetches
from streams.worker.compat.fetch_wait import set_fetch_max_wait
from streams.worker.compat.flow_control import buffered_partitions, report_cleared_buffers
from streams.worker.compat.read_offsets import unfilter_read_offsets
from streams.worker.compat.revoke_commit import commit_before_revoke
from streams.worker.compat.seek import seek_in_consumer_thread
from streams.worker.tp import TP


class _PartitionSets(Protocol):
    _paused_partitions: Collection[TP]
    _buffered_partitions: Collection[TP]


def _faust(tps: Iterable[TP]) -> Iterable[FaustTP]:
    return cast(Iterable[FaustTP], tps)


class FaustConsumer:
    def __init__(self, app: faust.App, topics: Collection[str]) -> None:
        """``topics``: the topics the worker processes (its guards leave others alone)."""
        self._app = app
        self._topics = topics

    def install(
        self,
        *,
        on_discarded: Callable[[set[TP]], None],
        on_withheld: Callable[[Mapping[TP, int]], Awaitable[None]],
        fetch_max_wait_ms: int,
    ) -> None:
        """Apply every workaround (see the package docstring) to the app's consumer."""
        consumer = self._app.consumer
        unfilter_read_offsets(consumer, self._topics)
        report_cleared_buffers(self._app.flow_control, self._topics, on_discarded)
        snapshot_fetches(consumer, on_withheld)
        set_fetch_max_wait(consumer, fetch_max_wait_ms)
        commit_before_revoke(consumer, self.commit)

    # --- faust's public consumer API ----------------------------------------------------

    def pause(self, tps: Iterable[TP]) -> None:
        self._app.consumer.pause_partitions(_faust(tps))

    def resume(self, tps: Iterable[TP]) -> None:
        self._app.consumer.resume_partitions(_faust(tps))

    def highwater(self, tp: TP) -> int | None:
        return self._app.consumer.highwater(cast(FaustTP, tp))

    def assignment(self) -> set[TP]:
        return set(self._app.consumer.assignment())

    async def commit(self) -> None:
        """Commit the acked prefix of every partition, now.

        faust's ``Consumer.commit`` commits nothing when another commit is in flight (the
        periodic one, every ``broker_commit_interval``): it waits for that one and returns,
        though that one took its offsets before our latest acks. On a revoke those acks
        were then never committed and the next owner ran the records again (an event
        dead-lettered twice in the rebalance-storm test). So wait for it first."""
        consumer = cast(Consumer, self._app.consumer)
        while await consumer.maybe_wait_for_commit_to_finish():
            pass  # no await between the last check and commit(): nothing else starts one
        await consumer.commit()

    async def seek(self, offsets: Mapping[TP, int]) -> None:
        """Seek in the consumer thread (``compat/seek.py``); failures are logged."""
        await seek_in_consumer_thread(self._app.consumer, offsets)

    async def start_offsets(self, tps: Collection[TP]) -> dict[TP, tuple[int | None, int]]:
        """Per partition: its committed offset (None if none) and its log start offset."""
        consumer = cast(Consumer, self._app.consumer)
        committed = await consumer.seek_to_committed()
        earliest = await consumer.earliest_offsets(*(ensure_aiokafka_TP(tp) for tp in _faust(tps)))
        start_of = {(tp.topic, tp.partition): offset for tp, offset in earliest.items()}
        return {
            tp: (committed.get(cast(FaustTP, tp)), start_of.get((tp.topic, tp.partition)) or 0)
            for tp in tps
        }

    async def position(self, starts: Mapping[TP, int]) -> None:
        """Seek newly assigned partitions to ``starts`` (as aiokafka partitions)."""
        await self.seek({ensure_aiokafka_TP(cast(FaustTP, tp)): off for tp, off in starts.items()})

    # --- flow control -------------------------------------------------------------------

    def flow_active(self) -> bool:
        return self._app.flow_control.is_active()

    def stop_flow(self) -> None:
        """Suspend flow and clear the stream buffers, in one step as faust does on revoke:
        while flow is suspended faust's stream *skips and acks* every record it still takes
        from a buffer, and an ack past a record that is still running would let faust
        commit past it (faust #606)."""
        self._app.flow_control.suspend()
        self._app.flow_control.clear()

    # --- private state, read only -------------------------------------------------------

    def paused(self, tp: TP) -> bool:
        """``tp`` is paused (retry window full, recovery)."""
        return tp in cast(_PartitionSets, self._app.consumer)._paused_partitions

    def buffered(self) -> set[TP]:
        """Partitions of our topics with records waiting in faust's stream buffers."""
        return buffered_partitions(self._app.flow_control, self._topics)

    def partition_state(self, tp: TP) -> dict[str, object]:
        """What the consumer stack knows of ``tp`` (diagnostics; read without locks)."""
        consumer: Any = self._app.consumer
        out: dict[str, object] = {
            "flow_active": getattr(consumer, "flow_active", None),
            "paused": tp in consumer._paused_partitions,
            "buffer_full": tp in consumer._buffered_partitions,
        }
        try:
            out["highwater"] = consumer.highwater(tp)
            kafka = consumer._thread._consumer
            state = kafka._subscription.subscription.assignment.state_value(tp)
            out["position"] = state._position
            out["awaiting_reset"] = state.awaiting_reset
            out["prefetched"] = tp in kafka._fetcher._records
        except Exception as exc:  # diagnostics only
            out["error"] = repr(exc)
        return out
