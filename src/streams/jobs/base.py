"""What a job is, and what its handler sees: the validated event and a context.

A job module declares itself with a module-level ``JOB = JobSpec(...)``: its family, the
event types it handles, the dependencies it guards with circuit breakers, its settings class
and how to build it. The worker discovers jobs through the ``streams.jobs`` entry-point
group (``registry.discover_jobs``), so a job ships in any installed package; adding one
edits nothing in the worker, the CLI or the runtime.

A handler is ``async def handle(event, ctx) -> None``. It signals its outcome by returning
(done) or raising ``Retryable``, ``Permanent``, ``RetryAfter(delay_s)`` (see errors.py); any
other exception is retryable. Calls to an external dependency go through
``async with ctx.dependency("smtp:relay.example:587"):`` so the worker's circuit breaker
can defer events while that dependency is down (raising ``Deferred``) and count failures.
A cancelled event (``DELETE /v1/events/{id}``) sets ``ctx.cancel``: a long handler checks
``ctx.cancel.raise_if_set()`` or races its I/O with ``ctx.cancel.wait()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic_settings import BaseSettings, SettingsConfigDict

T = TypeVar("T")
DependencyGuard = Callable[[str], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def no_guard(name: str) -> AsyncIterator[None]:
    """A guard that lets every call through (unit tests, jobs without breakers)."""
    yield


class JobTable(Protocol):
    """A family's job-state table (topics.yaml ``state_table: true``), read locally.

    Co-partitioned with its family: the worker owning partition p of the family holds the
    keys written by events of partition p, and a family with the same partition count and
    key (consent and push) lands on the same worker. ``put`` returns once the write is
    durable in the changelog (``None`` deletes the key).
    """

    def get(self, key: str) -> bytes | None: ...

    async def put(self, partition: int, key: str, value: bytes | None) -> None: ...


class CancelSignal:
    """Set when the running event is cancelled; handlers stop cooperatively (the worker
    never kills a handler for a cancel: what it already did stays done)."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self.reason = ""

    @property
    def is_set(self) -> bool:
        return self._event is not None and self._event.is_set()

    def set(self, reason: str = "cancelled") -> None:
        self.reason = reason
        if self._event is None:
            self._event = asyncio.Event()
        self._event.set()

    async def wait(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    def raise_if_set(self) -> None:
        if self.is_set:
            from streams.errors import Cancelled

            raise Cancelled(self.reason or "cancelled")

    async def race(self, work: Awaitable[T]) -> T:
        """Await ``work``; raise ``Cancelled`` (cancelling ``work``) if the signal comes first."""
        self.raise_if_set()
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self.raise_if_set()
        return task.result()


class _Never(CancelSignal):
    """A signal nothing sets: shared, so it holds no event (an asyncio.Event binds to the
    first loop that waits on it)."""

    __slots__ = ()

    def set(self, reason: str = "cancelled") -> None:
        raise RuntimeError("NEVER_CANCELLED cannot be set")

    async def wait(self) -> None:
        await asyncio.get_running_loop().create_future()  # forever (until cancelled)

    async def race(self, work: Awaitable[T]) -> T:
        return await work


NEVER_CANCELLED: CancelSignal = _Never()
"""The default signal (unit tests, callers without a control plane): never set."""


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
    tables: Mapping[str, JobTable] = field(default_factory=dict)  # family -> its state table
    cancel: CancelSignal = NEVER_CANCELLED


Handler = Callable[[Any, JobContext], Awaitable[None]]


class Job(Protocol):
    """A job: handles some event types, may hold connections between events.

    Built from its settings object (the first argument); ``start`` runs before the worker
    consumes, ``stop`` after it has drained. Event types it names in an optional class
    attribute ``batches`` (type -> ``jobs.batch.Batch``) go to its ``handle_batch(events,
    ctx)`` instead of ``handle`` (``HandlerRegistry.add_job``).
    """

    event_types: ClassVar[tuple[str, ...]]

    def __init__(self, settings: Any) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def handle(self, event: Any, ctx: JobContext) -> None: ...


class JobSettings(BaseSettings):
    """Base of a job's own settings: ``STREAMS_*`` variables, read when the job is built."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", extra="ignore")


@dataclass(frozen=True)
class JobSpec:
    """A job module's declaration (its module-level ``JOB``).

    ``family`` is the topics.yaml family whose events ``job_type`` handles (its
    ``event_types``). ``dependencies`` are the breaker-name prefixes its handler passes to
    ``ctx.dependency`` (``"smtp"`` for ``"smtp:relay:587"``): those breakers use this
    family's ``circuit_breaker`` policy. The worker builds the job as
    ``job_type(settings_type())``: its settings come from the environment when it starts.
    """

    family: str
    job_type: type[Job]
    settings_type: type[JobSettings]
    dependencies: tuple[str, ...] = ()

    @property
    def event_types(self) -> tuple[str, ...]:
        return self.job_type.event_types

    def create(self, settings: JobSettings | None = None) -> Job:
        """The job, built from ``settings`` (default: read from the environment); raises
        ConfigError or pydantic's ValidationError naming an invalid setting."""
        return self.job_type(settings if settings is not None else self.settings_type())
