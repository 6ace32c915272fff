"""The worker's side of ``streams.control``: cancels and pauses, seen by every worker.

``WorkerControl`` follows the control topic from its beginning (``control.reader``) and
holds every family closed until it has read the whole topic, so a restarted worker never
runs an event cancelled, or a family paused, before it started.

- ``cancel/<event_id>``: ``cancelled(event_id)`` is checked before a handler runs (the
  processor then acks the event with outcome ``cancelled``); a handler already running gets
  its ``ctx.cancel`` set (``signal_for``) and stops cooperatively.
- ``pause/<family>``: the family's gate closes (``wait_open``: nothing more is admitted to
  its lanes, including retry records falling due) and its main and retry partitions are
  paused in the consumer (no more fetching); a tombstone resumes them. Assignments re-pause
  them (``holds``).

Commands arrive on the follower's thread and are applied on the worker's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Protocol

from streams.control.model import CANCEL, PAUSE, Command
from streams.control.reader import ControlView, TopicFollower
from streams.jobs.base import CancelSignal
from streams.worker.tp import TP

log = logging.getLogger(__name__)


class ConsumerSide(Protocol):
    """What pausing needs of the runtime (``Rebalancer`` + ``FaustConsumer``)."""

    def pause(self, tps: Collection[TP]) -> None: ...
    def resume_tp(self, tp: TP) -> None: ...
    def assignment(self) -> set[TP]: ...


class WorkerControl:
    def __init__(
        self,
        *,
        view: ControlView,
        follower: TopicFollower | None,
        topics_of: dict[str, tuple[str, ...]],
        clock_ms: Callable[[], int],
    ) -> None:
        """``topics_of``: family -> its processed topics (main and retry tiers)."""
        self.view = view
        self._follower = follower
        self._topics_of = topics_of
        self._family_of = {t: fam for fam, topics in topics_of.items() for t in topics}
        self._clock_ms = clock_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: ConsumerSide | None = None
        self._open = {family: asyncio.Event() for family in topics_of}
        self._loaded = follower is None
        self._released = False
        self._running: dict[str, list[tuple[CancelSignal, str | None]]] = {}
        self.applied: dict[str, bool] = {}  # family -> paused, as applied here
        self._on_cancel: list[Callable[[str], None]] = []
        view.listen(self._from_thread)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, consumer: ConsumerSide) -> None:
        """Wait until the whole control topic is read, then open the unpaused families."""
        self._loop = asyncio.get_running_loop()
        self._consumer = consumer
        if self._follower is not None:
            self._follower.start()
            while not await asyncio.to_thread(self._follower.wait_caught_up, 1.0):
                if self._follower.error:
                    log.warning("control: %s (families stay closed)", self._follower.error)
        self._loaded = True
        for family in self._open:
            self._apply_pause(family)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """``callback(event_id)`` on the loop when a cancel arrives (schedulers expedite
        the held retry record so its status turns ``cancelled`` now)."""
        self._on_cancel.append(callback)

    def release_all(self) -> None:
        """Shutdown: wake everything waiting on a gate (it then leaves its record unacked)."""
        self._released = True
        for event in self._open.values():
            event.set()

    def stop(self) -> None:
        if self._follower is not None:
            self._follower.stop()

    @property
    def released(self) -> bool:
        """Shutdown released the gates."""
        return self._released

    @property
    def loaded(self) -> bool:
        return self._loaded

    # --- pause --------------------------------------------------------------------------

    async def wait_open(self, family: str) -> bool:
        """Return True once ``family`` may run; False when shutdown released the gate."""
        gate = self._open.get(family)
        if gate is None:
            return not self._released
        while not gate.is_set():
            await gate.wait()
        return not self._released

    def gate(self, family: str) -> FamilyGate:
        """What the family's lanes check before admitting a record."""
        return FamilyGate(self, self._open[family], family)

    def holds(self, tp: TP) -> bool:
        """``tp`` belongs to a family paused here (the consumer must not resume it)."""
        family = self._family_of.get(tp.topic)
        return family is not None and self.applied.get(family, False)

    def paused_families(self) -> list[str]:
        return sorted(f for f, paused in self.applied.items() if paused)

    def _apply_pause(self, family: str) -> None:
        paused = self.view.paused(family)
        was = self.applied.get(family)
        self.applied[family] = paused
        gate = self._open[family]
        if paused:
            gate.clear()
        elif self._loaded:
            gate.set()
        if was == paused or self._consumer is None:
            return
        tps = {tp for tp in self._consumer.assignment() if self._family_of.get(tp.topic) == family}
        if paused:
            self._consumer.pause(tps)
            log.info("control: family %s paused (%d partitions)", family, len(tps))
        elif was is not None:
            for tp in tps:
                self._consumer.resume_tp(tp)
            log.info("control: family %s resumed", family)

    # --- cancel -------------------------------------------------------------------------

    def cancelled(self, event_id: str, tenant_id: str | None) -> Command | None:
        """The active cancel of ``event_id`` if it applies to an event of ``tenant_id``: a
        cancel issued for a tenant (``args.tenant``, set by the API from the caller's token)
        never touches another tenant's event of the same id."""
        command = self.view.cancelled(event_id)
        if command is None or not _same_tenant(command, tenant_id):
            return None
        return command

    def register(self, event_id: str, tenant_id: str | None) -> CancelSignal:
        """A cancel signal for the handler of ``event_id`` about to run, set if a cancel
        arrives while it runs; ``unregister`` it when the handler ends."""
        signal = CancelSignal()
        signals = self._running.get(event_id)
        if signals is None:
            self._running[event_id] = [(signal, tenant_id)]
        else:
            signals.append((signal, tenant_id))
        return signal

    def unregister(self, event_id: str, signal: CancelSignal) -> None:
        signals = self._running.get(event_id)
        if signals is None:
            return
        if len(signals) == 1:
            del self._running[event_id]
        else:
            signals[:] = [s for s in signals if s[0] is not signal]

    @contextmanager
    def signal_for(self, event_id: str, tenant_id: str | None) -> Iterator[CancelSignal]:
        """``register`` .. ``unregister`` as a context (tests, slow paths)."""
        signal = self.register(event_id, tenant_id)
        try:
            yield signal
        finally:
            self.unregister(event_id, signal)

    # --- commands from the follower's thread ---------------------------------------------

    def _from_thread(self, kind: str, target: str, command: Command | None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # before start: start() applies the whole view
        loop.call_soon_threadsafe(self._on_command, kind, target, command)

    def _on_command(self, kind: str, target: str, command: Command | None) -> None:
        if kind == PAUSE.name and target in self._open and self._loaded:
            self._apply_pause(target)
        elif kind == CANCEL.name and command is not None and command.active(self._clock_ms()):
            for signal, tenant_id in self._running.get(target, ()):
                if _same_tenant(command, tenant_id):
                    signal.set(f"cancelled by {command.actor or 'an operator'}")
            for callback in self._on_cancel:
                callback(target)


class FamilyGate:
    """One family's gate: ``open`` is the hot path's check; ``wait`` when it is closed."""

    __slots__ = ("_control", "_event", "_family")

    def __init__(self, control: WorkerControl, event: asyncio.Event, family: str) -> None:
        self._control = control
        self._event = event
        self._family = family

    @property
    def open(self) -> bool:
        return self._event.is_set() and not self._control.released

    async def wait(self) -> bool:
        return await self._control.wait_open(self._family)


def _same_tenant(command: Command, tenant_id: str | None) -> bool:
    tenant = command.args.get("tenant")
    return tenant is None or tenant == tenant_id
