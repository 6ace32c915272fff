"""The worker's heartbeat: every ``heartbeat_interval_s`` one record to ``streams.workers``
(compacted, key = worker id; the record is ``core.heartbeat``) saying what this process
holds: per family its in-flight count, assigned partitions and paused flag, and the state of
every circuit breaker it has. A clean shutdown publishes a tombstone so the worker leaves
the operators' view at once; a crashed one ages out (``core.heartbeat.live``).

A failed send is logged and retried at the next beat: heartbeats are an operator's view,
never a reason to stop processing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from streams.core.heartbeat import FamilyBeat, Heartbeat
from streams.worker.ports import Producer
from streams.worker.tp import TP

log = logging.getLogger(__name__)
TOMBSTONE_TIMEOUT_S = 2.0


class FamilyView(Protocol):
    @property
    def topics(self) -> Any: ...  # FamilyTopics: .all
    @property
    def lanes(self) -> Any: ...  # Lanes: .in_flight
    @property
    def batches(self) -> Any: ...  # Batches: len() = events waiting for or in their batch

    @property
    def schedulers(self) -> Any: ...  # DueSchedulers: len() = records held until due


def worker_identity(configured: str | None) -> str:
    """The configured worker id, else ``<host>-<pid>``."""
    return configured or f"{socket.gethostname()}-{os.getpid()}"


class HeartbeatLoop:
    def __init__(
        self,
        *,
        worker_id: str,
        topic: str,
        interval_s: float,
        sender: Producer,
        families: Mapping[str, FamilyView],
        assignment: Callable[[], set[TP]],
        breakers: Callable[[], dict[str, str]],
        clock_ms: Callable[[], int],
        paused: Callable[[str], bool] = lambda _family: False,
    ) -> None:
        self.worker_id = worker_id
        self._topic = topic
        self._interval_s = interval_s
        self._sender = sender
        self._families = families
        self._assignment = assignment
        self._breakers = breakers
        self._clock_ms = clock_ms
        self._paused = paused
        self.beats = 0

    def snapshot(self) -> Heartbeat:
        assigned = self._assignment()
        families = {}
        for name, fr in self._families.items():
            topics = set(fr.topics.all)
            parts: dict[str, list[int]] = {}
            for tp in assigned:
                if tp.topic in topics:
                    parts.setdefault(tp.topic, []).append(tp.partition)
            families[name] = FamilyBeat(
                in_flight=int(fr.lanes.in_flight) + len(fr.batches),
                paused=self._paused(name),
                partitions=parts,
                waiting=sum(len(s) for s in fr.schedulers),
            )
        return Heartbeat(
            worker_id=self.worker_id,
            at_ms=self._clock_ms(),
            interval_ms=max(1, int(self._interval_s * 1000)),
            families=families,
            breakers=self._breakers(),
        )

    async def beat(self) -> None:
        value = self.snapshot().encode()
        sent = await self._sender.send(
            self._topic, self.worker_id.encode(), value, None, None, None
        )
        await sent
        self.beats += 1

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat to %s failed: %s", self._topic, exc)
            await asyncio.sleep(self._interval_s)

    async def leave(self) -> None:
        """Publish the tombstone of this worker (bounded; a failure only leaves it to age)."""
        with contextlib.suppress(Exception):
            sent = await asyncio.wait_for(
                self._sender.send(self._topic, self.worker_id.encode(), None, None, None, None),
                TOMBSTONE_TIMEOUT_S,
            )
            await asyncio.wait_for(sent, TOMBSTONE_TIMEOUT_S)
