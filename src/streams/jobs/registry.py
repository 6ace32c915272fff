"""Handlers by event type, and the discovery of jobs.

Jobs declare themselves (``JOB = JobSpec(...)`` in their module, see ``base.py``) and are
listed in the ``streams.jobs`` entry-point group of their distribution's metadata::

    [project.entry-points."streams.jobs"]
    email = "streams.jobs.mail:JOB"

``discover_jobs`` loads the declarations of the families a worker runs. Plain handler
functions register on the default registry::

    from streams.jobs.registry import handler

    @handler("push.requested")
    async def send_push(event: PushRequested, ctx: JobContext) -> None: ...

and ``streams worker --handlers my.module`` imports such modules. A batch handler
(``handler(event_type, batch=Batch(max_events=..., max_wait_ms=...))``) takes a list of
events and returns one outcome per event (``jobs/batch.py``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from streams.errors import ConfigError
from streams.jobs.base import Handler, Job, JobSpec
from streams.jobs.batch import Batch, BatchHandler, BatchSpec

ENTRY_POINT_GROUP = "streams.jobs"
BUILTIN_DISTRIBUTION = "streams"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._batch_handlers: dict[str, BatchSpec] = {}
        self.jobs: list[Job] = []
        self._dependency_family: dict[str, str] = {}

    def register(self, event_type: str, fn: Handler) -> None:
        """Register ``fn`` for ``event_type``; raises ConfigError on a second registration."""
        self._claim(event_type)
        self._handlers[event_type] = fn

    def register_batch(self, event_type: str, fn: BatchHandler, batch: Batch) -> None:
        """Register batch handler ``fn`` for ``event_type``; raises ConfigError on a second
        registration or when ``batch`` is not a ``Batch``."""
        if not isinstance(batch, Batch):
            raise ConfigError(
                f"handler for {event_type!r}: batch= takes a streams.jobs.batch.Batch, "
                f"got {type(batch).__name__}"
            )
        self._claim(event_type)
        self._batch_handlers[event_type] = BatchSpec(fn, batch)

    def _claim(self, event_type: str) -> None:
        if event_type in self._handlers or event_type in self._batch_handlers:
            raise ConfigError(f"a handler for {event_type!r} is already registered")

    def handler(self, event_type: str, *, batch: Batch | None = None) -> Callable[[F], F]:
        """Decorator registering ``fn`` for ``event_type``; with ``batch`` as a batch
        handler (``async def fn(events: list, ctx: BatchContext) -> outcomes``)."""

        def decorate(fn: F) -> F:
            if batch is None:
                self.register(event_type, fn)
            else:
                self.register_batch(event_type, fn, batch)
            return fn

        return decorate

    def add_job(self, job: Job, spec: JobSpec | None = None) -> None:
        """Register ``job``'s handler for its event types; with its ``spec``, its
        dependencies' breakers follow the spec's family.

        A job batches an event type by declaring it in its class attribute ``batches``
        (``{"analytics.rollup_requested": Batch(max_events=100, max_wait_ms=1000)}``): those
        types go to its ``handle_batch(events, ctx)`` (``jobs/batch.py``), the others to
        ``handle``."""
        batches = getattr(job, "batches", None) or {}
        unknown = sorted(set(batches) - set(job.event_types))
        if unknown:
            raise ConfigError(
                f"{type(job).__name__}.batches names {unknown}, not among its event_types "
                f"{list(job.event_types)}"
            )
        handle_batch = getattr(job, "handle_batch", None)
        if batches and not callable(handle_batch):
            raise ConfigError(
                f"{type(job).__name__} declares batches but has no handle_batch(events, ctx)"
            )
        for event_type in job.event_types:
            if event_type in batches:
                assert handle_batch is not None
                self.register_batch(event_type, handle_batch, batches[event_type])
            else:
                self.register(event_type, job.handle)
        self.jobs.append(job)
        if spec is not None:
            for prefix in spec.dependencies:
                self._claim_dependency(prefix, spec.family)

    def _claim_dependency(self, prefix: str, family: str) -> None:
        owner = self._dependency_family.setdefault(prefix, family)
        if owner != family:
            raise ConfigError(
                f"dependency {prefix!r} is declared by the jobs of families {owner!r} and "
                f"{family!r}: its circuit-breaker policy must come from one family"
            )

    def dependency_family(self, name: str) -> str | None:
        """The family whose breaker policy guards dependency ``name`` ("smtp:relay:587"):
        the family of the job declaring its prefix, or None when no job declares it."""
        return self._dependency_family.get(name.partition(":")[0])

    def get(self, event_type: str) -> Handler | None:
        """The plain handler of ``event_type`` (None for none, or a batch handler)."""
        return self._handlers.get(event_type)

    def batch_handler(self, event_type: str) -> BatchSpec | None:
        return self._batch_handlers.get(event_type)

    def batched_types(self) -> frozenset[str]:
        """The event types with a batch handler."""
        return frozenset(self._batch_handlers)

    def event_types(self) -> set[str]:
        return set(self._handlers) | set(self._batch_handlers)

    def merged(self, other: HandlerRegistry) -> HandlerRegistry:
        out = HandlerRegistry()
        for registry in (self, other):
            for event_type, fn in registry._handlers.items():
                out.register(event_type, fn)
            for event_type, spec in registry._batch_handlers.items():
                out.register_batch(event_type, spec.fn, spec.batch)
            out.jobs.extend(registry.jobs)
            for prefix, family in registry._dependency_family.items():
                out._claim_dependency(prefix, family)
        return out


default_registry = HandlerRegistry()
handler = default_registry.handler


def job_entry_points() -> list[importlib.metadata.EntryPoint]:
    """Every installed ``streams.jobs`` entry point, sorted by name."""
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def load_spec(entry_point: importlib.metadata.EntryPoint) -> JobSpec:
    """The ``JobSpec`` an entry point names; ConfigError says which one is broken."""
    try:
        spec = entry_point.load()
    except Exception as exc:
        raise ConfigError(
            f"job entry point {entry_point.name!r} ({entry_point.value}) cannot be loaded: {exc}"
        ) from exc
    if not isinstance(spec, JobSpec):
        raise ConfigError(
            f"job entry point {entry_point.name!r} ({entry_point.value}) names a "
            f"{type(spec).__name__}, not a streams.jobs.base.JobSpec"
        )
    return spec


def discover_jobs(
    families: Iterable[str],
    *,
    builtin: bool = True,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> list[JobSpec]:
    """The declarations of the jobs of ``families``, from the ``streams.jobs`` entry points.

    ``builtin=False`` leaves out the jobs shipped with streams itself (those of the
    ``streams`` distribution); jobs of other installed packages still load.
    """
    wanted = set(families)
    found: list[JobSpec] = []
    for entry_point in job_entry_points() if entry_points is None else entry_points:
        dist = getattr(entry_point, "dist", None)
        if not builtin and dist is not None and dist.name == BUILTIN_DISTRIBUTION:
            continue
        spec = load_spec(entry_point)
        if spec.family in wanted:
            found.append(spec)
    return found


def build_registry(
    families: Iterable[str],
    handler_modules: Iterable[str] = (),
    *,
    builtin_jobs: bool = True,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> HandlerRegistry:
    """The worker's handlers: the discovered jobs of ``families`` (built from their settings),
    then the handlers that ``handler_modules`` register on the default registry."""
    registry = HandlerRegistry()
    for spec in discover_jobs(families, builtin=builtin_jobs, entry_points=entry_points):
        registry.add_job(spec.create(), spec)
    import_handler_modules(list(handler_modules))
    return registry.merged(default_registry)


def import_handler_modules(modules: list[str]) -> None:
    """Import modules that register handlers; ConfigError names a module that fails."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot import handler module {name!r}: {exc}") from exc
