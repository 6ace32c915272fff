"""Timing-bound tests run alone, even when ``make test`` runs the suite in two processes.

pytest-xdist's workers share two cores: a latency bound measured while the other worker runs
a SIGKILL scenario measures that scenario, not the code. A test marked ``serial`` holds an
exclusive file lock for its setup, call and teardown; every other test holds the same lock
shared, so a serial test waits for the other worker's current test and the other worker
waits for it. A second lock (the turnstile) is taken by everyone on the way in and held by a
waiting serial test, so a stream of shared holders cannot starve it.

Without xdist (one process) there is nothing to exclude and the locks are not taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _lock_dir() -> Path | None:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # the same in every worker of one run
    if not run:
        return None
    path = Path(tempfile.gettempdir()) / f"streams-serial-{run}"
    path.mkdir(exist_ok=True)
    return path


@contextlib.contextmanager
def exclusive(serial: bool) -> Iterator[None]:
    """Hold the run's lock exclusively (``serial``) or shared, for the ``with`` block."""
    where = _lock_dir()
    if where is None:
        yield
        return
    with (where / "turnstile").open("a") as turnstile, (where / "run").open("a") as run:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(run, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        finally:
            if not serial:  # a serial test keeps the turnstile: nobody new gets in
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(run, fcntl.LOCK_UN)
            if serial:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
