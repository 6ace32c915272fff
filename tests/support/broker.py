"""A broker of a test's own, which it may stop, SIGKILL and restart (not the session's).

``dedicated_broker`` starts a ``LocalBroker`` in ``state_dir`` (the jar cache shared with
the session's), yields it and stops it. A restart after ``kill`` keeps its data and ports
(``LocalBroker`` reuses the ports of ``state.json``), so clients reconnect to the same
address. With ``proxied=True`` it also has a ``PROXIED`` listener that advertises a port of
its own, where the test runs a ``tests.support.proxy.TcpProxy`` (``proxy_port``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from streams.broker.local import LocalBroker
from streams.settings import Settings
from streams.testing.processes import free_ports

BROKER_START_TIMEOUT_S = 120.0


@contextlib.contextmanager
def dedicated_broker(state_dir: Path, *, proxied: bool = False) -> Iterator[LocalBroker]:
    broker = LocalBroker(
        state_dir,
        cache_dir=Settings().home / "broker-cache",
        die_with_parent=True,
        proxied=tuple(free_ports(2)) if proxied else None,  # type: ignore[arg-type]
    )
    broker.start(timeout_s=BROKER_START_TIMEOUT_S)
    try:
        yield broker
    finally:
        broker.stop()


def bootstrap_of(broker: LocalBroker) -> str:
    bootstrap = broker.status().bootstrap
    assert bootstrap is not None, "the dedicated broker is not running"
    return bootstrap


def proxy_ports(broker: LocalBroker) -> tuple[int, int]:
    """(where the proxy listens = the advertised port, the broker's PROXIED listener)."""
    assert broker.proxied is not None, "the broker has no proxied listener"
    listen, advertised = broker.proxied
    return advertised, listen


def kill(broker: LocalBroker) -> None:
    """SIGKILL the broker's JVM: no clean shutdown, as after a crash."""
    assert broker.stop(crash=True), "the dedicated broker was not running"
