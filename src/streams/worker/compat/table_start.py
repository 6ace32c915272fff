"""faust's table manager starts without its fixed one-second sleep.

faust's ``TableManager.on_start`` sleeps one second before it finalizes the tables, so
that tables declared late (after the app started) still register. Every table of ours is
declared when the runtime is built, before the worker starts, so the sleep only delays
every worker start (and each test that starts one) by a second. ``TableManager`` is
faust's, with that sleep left out; the app uses it through its ``TableManager`` setting.
"""

from __future__ import annotations

from faust.tables.manager import TableManager as _FaustTableManager


class TableManager(_FaustTableManager):
    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
