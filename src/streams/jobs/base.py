"""What a job handler sees: the validated event and a context.

A handler is ``async def handle(event, ctx) -> None``. It signals its outcome by returning
(done) or raising ``Retryable``, ``Permanent``, ``RetryAfter(delay_s)`` (see errors.py); any
other exception is retryable. Calls to an external dependency go through
``async with ctx.dependency("smtp:relay.example:587"):`` so the worker's circuit breaker
can defer events while that dependency is down (raising ``Deferred``) and count failures.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

DependencyGuard = Callable[[str], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def no_guard(name: str) -> AsyncIterator[None]:
    """A guard that lets every call through (unit tests, jobs without breakers)."""
    yield


@dataclass(frozen=True)
class JobContext:
    """Metadata of the event being handled."""

    event_id: str
    event_type: str
    family: str
    attempt: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)
    topic: str = ""
    partition: int = -1
    offset: int = -1
    dependency: DependencyGuard = no_guard


Handler = Callable[[Any, JobContext], Awaitable[None]]


class Job(Protocol):
    """A job module: handles some event types, may hold connections between events."""

    event_types: tuple[str, ...]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def handle(self, event: Any, ctx: JobContext) -> None: ...
