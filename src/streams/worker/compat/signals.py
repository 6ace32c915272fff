"""mode's signal handlers, replaced.

mode's worker ignores a second SIGTERM (it schedules one shutdown and nothing more), so a
worker stuck in its drain could not be told to exit. ``SignalledWorker`` routes SIGTERM and
SIGINT to ``on_stop_signal`` and lets the subclass run its own graceful stop as mode's
signal-stop future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine

import faust


class SignalledWorker(faust.Worker):
    def _on_sigint(self) -> None:
        self.on_stop_signal("SIGINT")

    def _on_sigterm(self) -> None:
        self.on_stop_signal("SIGTERM")

    def on_stop_signal(self, name: str) -> None:
        """Called for each SIGTERM / SIGINT (``name``)."""
        raise NotImplementedError

    def stop_with(self, graceful: Coroutine[object, object, None]) -> None:
        """Run ``graceful`` as mode's signal-stop (as mode does with its own stop)."""
        self._signal_stop_time = self.loop.time()
        self._signal_stop_future = asyncio.ensure_future(graceful, loop=self.loop)

    def cancel_start(self) -> None:
        """Cancel mode's pending start, if any (as mode does after its own stop)."""
        fut = self._starting_fut
        if fut is not None and not fut.done():
            fut.cancel()
