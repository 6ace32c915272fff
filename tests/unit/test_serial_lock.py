"""tests/support/serial.py: a serial test waits for the running shared one, and a shared
test arriving while it waits queues behind it (no starvation)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from tests.support.serial import exclusive


@pytest.fixture
def xdist_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", f"unit-{uuid.uuid4().hex}")
    yield


def test_a_serial_test_waits_for_the_shared_one_and_blocks_newcomers(xdist_run: None) -> None:
    order: list[str] = []
    release_a = threading.Event()
    a_in = threading.Event()

    def holder(name: str, serial: bool, release: threading.Event | None = None) -> None:
        with exclusive(serial):
            order.append(f"{name} in")
            if release is not None:
                a_in.set()
                release.wait(10)
            order.append(f"{name} out")

    a = threading.Thread(target=holder, args=("a", False, release_a))
    a.start()
    assert a_in.wait(10)
    b = threading.Thread(target=holder, args=("b", True))
    b.start()
    b.join(0.3)  # b is blocked behind a: it cannot have entered
    c = threading.Thread(target=holder, args=("c", False))
    c.start()
    c.join(0.3)  # c queues behind the waiting serial b, though a's lock is shared
    assert order == ["a in"]
    release_a.set()
    for t in (a, b, c):
        t.join(10)
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]


def test_without_xdist_nothing_is_locked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_TESTRUNUID", raising=False)
    with exclusive(True), exclusive(True):  # the same thread twice: no lock was taken
        pass
