"""Trigger faults by progress: wait until a count of side effects crosses a threshold.

A fault injected after a wall-clock sleep lands wherever the machine happens to be (before
any work on a slow one, after all of it on a fast one). These helpers let a test inject
it when the work has reached a known point instead, and say so when it did not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.01  # counting rows is cheap: poll often, so a threshold is not overshot by much


def wait_for_count(count: Callable[[], int], at_least: int, timeout_s: float, what: str) -> int:
    """Poll ``count()`` until it reaches ``at_least``; returns the count it saw.

    AssertionError (naming ``what`` and the last count) after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        seen = count()
        if seen >= at_least:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}: {seen} of {at_least}"
            )
        time.sleep(POLL_S)


def wait_for_text(read: Callable[[], str], text: str, timeout_s: float, what: str) -> None:
    """Poll ``read()`` (a log, say) until it contains ``text``; AssertionError past timeout."""
    deadline = time.monotonic() + timeout_s
    while text not in read():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_S)
