"""Job-state tables: a family's ``<family>.state`` faust table offered to jobs (``JobTable``).

Reads are local dict lookups in the table's store; writes go through the family's
``ChangelogWriter`` (group commit) and ``put`` returns once the changelog record holding
the write is acknowledged, so a handler that returns after ``put`` has made it durable
(consent revoked, address suppressed) before its event is acked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.worker.changelog import ChangelogWriter


class StateTable:
    def __init__(self, store: Any, writer: ChangelogWriter) -> None:
        self._store = store
        self._writer = writer

    def get(self, key: str) -> bytes | None:
        value = self._store.get(key.encode())
        return value if isinstance(value, bytes) else None

    async def put(self, partition: int, key: str, value: bytes | None) -> None:
        done = asyncio.get_running_loop().create_future()

        def durable() -> None:
            if not done.done():
                done.set_result(None)

        self._writer.put(partition, key.encode(), value, durable)
        await done
