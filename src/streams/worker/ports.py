"""The producer as the worker's parts use it: faust's ``send`` (a future per record)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol


class Producer(Protocol):
    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> Awaitable[Any]: ...
