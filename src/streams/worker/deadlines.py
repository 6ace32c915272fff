"""Handler deadlines without a timer per call.

``asyncio.timeout`` schedules a timer handle per call and cancelling it leaves the handle in
the event loop's heap until its due time: at thousands of events per second with a 30 s
timeout the heap holds hundreds of thousands of dead timers and the pushes were the worker's
largest single CPU cost (18% in a profile of the no-op drain). Here ``arm`` is a dict
insertion; one timer (while anything is armed) fires every ``tick_s`` and cancels the tasks
whose deadline has passed, marking their token ``expired`` so that the caller tells its own
cancellation from anyone else's. A deadline fires at most one tick late.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable


class Token:
    __slots__ = ("due_s", "expired", "key", "task")

    def __init__(self, key: int, task: asyncio.Task[object] | None, due_s: float) -> None:
        self.key = key
        self.task = task
        self.due_s = due_s
        self.expired = False


class Deadlines:
    def __init__(self, tick_s: float = 0.25, clock_s: Callable[[], float] = time.monotonic):
        self._tick_s = tick_s
        self._clock_s = clock_s
        self._armed: dict[int, Token] = {}
        self._keys = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, timeout_s: float) -> Token:
        """A deadline ``timeout_s`` from now for the current task."""
        task = asyncio.current_task()
        token = Token(next(self._keys), task, self._clock_s() + timeout_s)
        self._armed[token.key] = token
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._tick_s, self._tick)
        return token

    def disarm(self, token: Token) -> None:
        self._armed.pop(token.key, None)

    def expire(self) -> int:
        """Cancel every task past its deadline; returns how many."""
        now = self._clock_s()
        late = [t for t in self._armed.values() if t.due_s <= now]
        for token in late:
            del self._armed[token.key]
            token.expired = True
            if token.task is not None:
                token.task.cancel()
        return len(late)

    def _tick(self) -> None:
        self._timer = None
        self.expire()
        if self._armed:
            self._timer = asyncio.get_running_loop().call_later(self._tick_s, self._tick)
