"""Operator resets of rate-limit buckets: the control command ``ratelimit-reset/<family>/
<key>`` (issued by ``POST /v1/ratelimits/{family}/{key}:reset``), applied by the worker that
owns the key's partition to its own table (``RateGate.reset``), which writes the refill
through to the changelog.

A worker applies a command when it arrives, for the partitions it holds then; having
applied one, it tombstones it (a restarted worker does not refill the bucket a second
time). A reset issued while nobody holds the partition (a rebalance) is applied by nobody
and expires with its TTL; the status endpoint shows whether the bucket was refilled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from streams.control.model import Command, command_key, register_kind
from streams.worker.ratelimit import RateGate
from streams.worker.tp import TP

log = logging.getLogger(__name__)
RATELIMIT_RESET = register_kind(
    "ratelimit-reset", r"[a-z][a-z0-9_]*/[^/]{1,256}", "refill the buckets of <family>/<key>"
)


class RateLimitResets:
    def __init__(
        self,
        *,
        gates: Mapping[str, RateGate],
        main_topic: Mapping[str, str],
        assignment: Callable[[], set[TP]],
        tombstone: Callable[[str], Any],
        clock_ms: Callable[[], int],
    ) -> None:
        """``tombstone(control key)``: a coroutine revoking the applied command."""
        self._gates = gates
        self._main_topic = main_topic
        self._assignment = assignment
        self._tombstone = tombstone
        self._clock_ms = clock_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self.applied = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def from_thread(self, kind: str, target: str, command: Command | None) -> None:
        """A ``ControlView`` listener (the follower's thread): hop to the worker's loop."""
        if kind != RATELIMIT_RESET.name or command is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self.apply, command)

    def apply(self, command: Command) -> int:
        if not command.active(self._clock_ms()):
            return 0
        family, _, key = command.target.partition("/")
        gate, topic = self._gates.get(family), self._main_topic.get(family)
        if gate is None or topic is None:
            return 0
        owned = {tp.partition for tp in self._assignment() if tp.topic == topic}
        count = gate.reset(key, owned)
        if count:
            self.applied += count
            log.info(
                "rate limits of %s reset (%d bucket(s)) by %s", command.target, count, command.actor
            )
            task = asyncio.get_running_loop().create_task(
                self._tombstone(command_key(command.kind, command.target))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return count
