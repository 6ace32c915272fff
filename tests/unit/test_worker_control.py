"""The worker's control-plane parts with fakes: pause gates, cancel signals, status
coalescing (the end-to-end behaviour is in tests/integration/test_control_worker.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.unit.worker_fakes import TP

from streams.control.model import Command
from streams.control.reader import ControlView
from streams.worker.control import WorkerControl
from streams.worker.status import StatusRecorder


class FakeConsumer:
    def __init__(self, tps: set[TP]) -> None:
        self.tps = tps
        self.paused: set[TP] = set()
        self.resumed: list[TP] = []

    def pause(self, tps: Any) -> None:
        self.paused |= set(tps)

    def resume_tp(self, tp: Any) -> None:
        self.paused.discard(tp)
        self.resumed.append(tp)

    def assignment(self) -> set[Any]:
        return set(self.tps)


def command(kind: str, target: str, **args: str) -> bytes:
    return Command(kind=kind, target=target, issued_at_ms=1, args=args).encode()


def make(view: ControlView) -> WorkerControl:
    return WorkerControl(
        view=view,
        follower=None,
        topics_of={"email": ("email", "email.retry.5s"), "webhook": ("webhook",)},
        clock_ms=lambda: 10,
    )


async def test_a_pause_closes_the_gate_and_pauses_the_family_partitions() -> None:
    view = ControlView(lambda: 10)
    view.apply(b"pause/email", command("pause", "email"))  # before start: applied at start
    control = make(view)
    tps = {TP("email", 0), TP("email.retry.5s", 0), TP("webhook", 0)}
    consumer = FakeConsumer(tps)
    await control.start(consumer)
    assert consumer.paused == {TP("email", 0), TP("email.retry.5s", 0)}
    assert control.holds(TP("email", 0)) and not control.holds(TP("webhook", 0))
    assert control.paused_families() == ["email"]
    assert await control.wait_open("webhook")
    waiter = asyncio.ensure_future(control.wait_open("email"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    view.apply(b"pause/email", None)  # the follower's thread in the worker
    assert await asyncio.wait_for(waiter, 1) is True
    assert consumer.paused == set() and len(consumer.resumed) == 2
    view.apply(b"pause/webhook", command("pause", "webhook"))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(control.wait_open("webhook"))
    await asyncio.sleep(0.01)
    control.release_all()  # shutdown: the waiter leaves its record unacked
    assert await asyncio.wait_for(waiter, 1) is False


async def test_a_cancel_signals_the_running_handler_of_its_tenant_only() -> None:
    view = ControlView(lambda: 10)
    control = make(view)
    await control.start(FakeConsumer(set()))
    with control.signal_for("e1", "acme") as mine, control.signal_for("e1", "globex") as other:
        view.apply(b"cancel/e1", command("cancel", "e1", tenant="acme"))
        await asyncio.sleep(0.01)
        assert mine.is_set and not other.is_set
    assert control.cancelled("e1", "acme") is not None
    assert control.cancelled("e1", "globex") is None
    assert control.cancelled("e2", "acme") is None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any = None) -> None:
        self.sent.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_status_transitions_coalesce_per_event() -> None:
    producer = FakeProducer()
    recorder = StatusRecorder(producer=producer, topic="streams.status", clock_ms=lambda: 5)
    recorder.note("e1", "email", "email.requested", "acme", "running", 1)
    recorder.note("e2", "email", "email.requested", None, "running", 1)
    recorder.note("e1", "email", "email.requested", "acme", "done", 1)
    assert recorder.flush() == 2
    values = {key.decode(): json.loads(value) for _, key, value in producer.sent}
    assert values["e1"]["state"] == "done" and values["e1"]["tenant_id"] == "acme"
    assert values["e2"]["state"] == "running" and values["e2"]["at_ms"] == 5
    assert recorder.flush() == 0


async def test_cancel_signal_race() -> None:
    import pytest

    from streams.errors import Cancelled
    from streams.jobs.base import NEVER_CANCELLED, CancelSignal

    assert await NEVER_CANCELLED.race(asyncio.sleep(0, "done")) == "done"
    signal = CancelSignal()
    assert await signal.race(asyncio.sleep(0, "fast")) == "fast"
    slow = asyncio.ensure_future(signal.race(asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    signal.set("stop")
    with pytest.raises(Cancelled, match="stop"):
        await asyncio.wait_for(slow, 1)
    with pytest.raises(Cancelled):
        signal.raise_if_set()
