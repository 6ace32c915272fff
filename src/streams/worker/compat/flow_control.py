"""Report the partitions whose buffered records faust discards.

faust's ``flow_control.resume()`` clears every stream buffer. At the end of table recovery
faust resumes the partitions, seeks them to their committed offsets and only *then* resumes
flow: records fetched in between were thrown away after the fetch position had passed them,
and nothing delivered them again (a restarted worker whose tables needed recovery stopped
after its first ~25 records, lag > 0 and the fetch position at the end of the log). Every
clear is therefore looked at: the partitions that lose records are reported, and the worker
seeks them back to their next expected offset (``Rebalancer.on_discarded``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol, cast

from mode.utils.queues import FlowControlEvent

from streams.worker.tp import TP


class _Clearable(Protocol):
    clear: Callable[[], None]


def buffered_partitions(flow_control: FlowControlEvent, topics: Collection[str]) -> set[TP]:
    """Partitions of ``topics`` with records waiting in faust's stream buffers."""
    found: set[TP] = set()
    for queue in list(getattr(flow_control, "_queues", ())):
        for item in list(getattr(queue, "_queue", ())):
            tp = getattr(getattr(item, "message", None), "tp", None)
            if tp is not None and tp.topic in topics:
                found.add(tp)
    return found


def report_cleared_buffers(
    flow_control: FlowControlEvent,
    topics: Collection[str],
    on_discarded: Callable[[set[TP]], None],
) -> None:
    """Call ``on_discarded`` with the partitions of ``topics`` that lose buffered records
    whenever faust clears its stream buffers (after the clear)."""
    buffers = cast(_Clearable, flow_control)
    clear = buffers.clear

    def guarded_clear() -> None:
        lost = buffered_partitions(flow_control, topics)
        clear()
        if lost:
            on_discarded(lost)

    buffers.clear = guarded_clear
